// Run colours: the same run has the same colour in every view, table and URL. Pure.

// 20 distinguishable colours (Tableau 10 and its light partners, interleaved by contrast).
export const PALETTE = [
  "#1f77b4",
  "#d62728",
  "#2ca02c",
  "#ff7f0e",
  "#9467bd",
  "#8c564b",
  "#e377c2",
  "#17becf",
  "#7f7f7f",
  "#bcbd22",
  "#393b79",
  "#ad494a",
  "#637939",
  "#e7969c",
  "#6b6ecf",
  "#8c6d31",
  "#ce6dbd",
  "#3182bd",
  "#fd8d3c",
  "#31a354",
];

export function colour(index) {
  return PALETTE[index % PALETTE.length];
}

// One colour per run from its id (not its position in a URL or a table): a multiplicative
// hash spreads consecutive ids (a sweep's runs) over the palette.
export function runColour(id) {
  const h = Math.imul(Number(id) >>> 0, 2654435761) >>> 0;
  return PALETTE[(h >>> 16) % PALETTE.length];
}
