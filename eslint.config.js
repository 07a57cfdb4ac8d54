// ESLint for the dashboard (frontend/js: browser ES modules, no build step) and its node unit
// tests (tests/frontend/unit). `npx eslint frontend tests/frontend/unit` in CI.
import js from "@eslint/js";
import globals from "globals";

export default [
  // Plotly.js is vendored as shipped (minified, MIT): not ours to lint.
  { ignores: ["frontend/vendor/**", "node_modules/**"] },
  js.configs.recommended,
  {
    files: ["frontend/**/*.js"],
    languageOptions: { ecmaVersion: 2023, sourceType: "module", globals: { ...globals.browser } },
  },
  {
    // The pure data modules run in node too (their unit tests): no browser globals there.
    files: ["frontend/js/data/**/*.js"],
    languageOptions: { globals: {} },
  },
  {
    files: ["tests/frontend/unit/**/*.mjs", "eslint.config.js"],
    languageOptions: { ecmaVersion: 2023, sourceType: "module", globals: { ...globals.node } },
  },
  {
    rules: {
      "no-unused-vars": ["error", { args: "after-used", ignoreRestSiblings: true }],
      "prefer-const": "error",
      "no-var": "error",
      eqeqeq: ["error", "smart"],
      "no-implicit-globals": "error",
      // A view is a few named functions, not one long closure (issue 25): long functions fail.
      "max-lines-per-function": ["error", { max: 90, skipBlankLines: true, skipComments: true }],
      complexity: ["error", 25],
    },
  },
];
