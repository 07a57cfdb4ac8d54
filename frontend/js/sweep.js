export function renderSweep(root) { root.append("sweep"); return () => {}; }
