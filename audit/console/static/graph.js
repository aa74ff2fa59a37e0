// The provenance graph drawn with cytoscape (served from the repository's node_modules at
// /console/vendor/, never from a CDN). Shapes are keyed on the node `type` the API returns;
// an unknown type is drawn as a grey hexagon. Denied and flagged nodes differ in border style
// and label text as well as colour, so the difference never rests on colour alone.

const VENDOR = "/console/vendor/cytoscape.esm.min.mjs";

// type -> [shape, fill, short name]; the legend in index.html and console.css match these.
export const KINDS = {
  organization: ["pentagon", "#fde2c4", "organization"],
  account: ["round-triangle", "#f3e6d8", "account"],
  agreement: ["cut-rectangle", "#fff1a8", "agreement"],
  signature: ["rhomboid", "#e6defc", "signature"],
  dataset: ["barrel", "#cfe6fb", "dataset"],
  access: ["rectangle", "#d7f0da", "access"],
  artifact: ["ellipse", "#fbf3cf", "artifact"],
  model: ["octagon", "#f7dbe8", "model"],
  consent: ["tag", "#d2f1ec", "consent"],
  authorization: ["round-diamond", "#ecdcf7", "authorization"],
  subject: ["round-tag", "#e2ecd2", "subject"],
  cohort: ["concave-hexagon", "#dde8f3", "cohort"],
};
const UNKNOWN = ["hexagon", "#e6e6e6", "item"];

export function kindOf(type) {
  return KINDS[type] || UNKNOWN;
}

let library = null;

function loadLibrary() {
  if (library === null) {
    library = import(VENDOR).then((module) => module.default);
    library.catch(() => { library = null; });
  }
  return library;
}

function short(text, max = 22) {
  if (typeof text !== "string") return String(text);
  if (/^0x[0-9a-fA-F]{40,}$/.test(text)) return `${text.slice(0, 8)}…${text.slice(-4)}`;
  return text.length > max ? `${text.slice(0, max - 1)}…` : text;
}

/** The label drawn on a node: the state marks first, then the kind and a short label. */
export function nodeCaption(node, marks) {
  const prefix = [marks.denied ? "✕ DENIED" : "", marks.flagged.length ? "⚑ FLAGGED" : "",
    marks.cut ? "✂" : ""]
    .filter(Boolean).join(" ");
  let label = String(node.label);
  if (label.startsWith(`${node.type} `)) label = label.slice(node.type.length + 1);
  if (node.type === "access") {
    label = marks.denied ? (node.attributes.reason || "denied") : `✓ ${String(node.attributes.decision || "").toLowerCase()}`;
  }
  return [prefix, kindOf(node.type)[2], short(label)].filter(Boolean).join("\n");
}

// Layers from authority down to what came of it: who, then what was agreed and on what
// data, then the accesses under it, then what they released and what was derived from that.
const RANK = {
  organization: 0, account: 1, subject: 1, dataset: 2, signature: 2, consent: 2,
  authorization: 2, agreement: 3, access: 4, artifact: 5, cohort: 5, model: 6,
};
const STEP_X = 150;
const STEP_Y = 84;
// A label of 12 px drawn at 0.85 is 10 px on screen: the smallest the graph shows by itself.
// Past that (a large graph) the view frames the selection and its neighbours instead of the
// whole graph; the user zooms out or pans for the rest.
const LEGIBLE_ZOOM = 0.85;
const MAX_FIT_ZOOM = 1.25;

/** Preset positions: one band per rank, rows of at most `perRow` nodes, each band ordered by
 * where its neighbours above sit (one barycentre sweep keeps edges short). */
function layered(graph, width) {
  const perRow = Math.max(3, Math.min(10, Math.floor(width / STEP_X)));
  const near = new Map(graph.nodes.map((n) => [n.id, []]));
  for (const e of graph.edges) {
    if (near.has(e.source) && near.has(e.target)) {
      near.get(e.source).push(e.target);
      near.get(e.target).push(e.source);
    }
  }
  const bands = new Map();
  graph.nodes.forEach((n, index) => {
    const rank = RANK[n.type] ?? 4;
    if (!bands.has(rank)) bands.set(rank, []);
    bands.get(rank).push({ id: n.id, index });
  });
  const positions = {};
  let y = 0;
  for (const rank of [...bands.keys()].sort((a, b) => a - b)) {
    const band = bands.get(rank);
    for (const item of band) {
      const placed = near.get(item.id).filter((o) => o in positions).map((o) => positions[o].x);
      item.key = placed.length ? placed.reduce((a, b) => a + b, 0) / placed.length : Infinity;
    }
    band.sort((a, b) => a.key - b.key || a.index - b.index);
    for (let start = 0; start < band.length; start += perRow) {
      const row = band.slice(start, start + perRow);
      row.forEach((item, i) => { positions[item.id] = { x: (i - (row.length - 1) / 2) * STEP_X, y }; });
      y += STEP_Y;
    }
    y += STEP_Y * 0.25;
  }
  return positions;
}

const STYLE = [
  {
    selector: "node",
    style: {
      shape: "data(shape)", "background-color": "data(fill)", label: "data(caption)",
      width: 138, height: 54, "border-width": 1.5, "border-color": "#3b4350",
      "font-family": "system-ui, sans-serif", "font-size": 12, color: "#111",
      "text-wrap": "wrap", "text-max-width": 126, "text-valign": "center", "text-halign": "center",
      "min-zoomed-font-size": 4,
    },
  },
  { selector: "node[type = 'account'], node[type = 'authorization']", style: {
    width: 46, height: 40, "text-valign": "bottom", "text-margin-y": 4,
    "text-background-color": "#fff", "text-background-opacity": 0.85,
    "text-background-padding": 2 } },
  { selector: "node[type = 'signature']", style: { width: 110, height: 40 } },
  { selector: "node.root", style: { "border-width": 3, "border-color": "#1a3e8c", "font-weight": "bold" } },
  { selector: "node.flagged", style: { "border-width": 4, "border-style": "dashed", "border-color": "#8a4b00" } },
  { selector: "node.cut", style: { "border-width": 4, "border-style": "dotted", "border-color": "#4a4a4a" } },
  { selector: "node.denied", style: {
    "border-width": 7, "border-style": "double", "border-color": "#a4001c",
    "background-color": "#fbe0e4", "font-weight": "bold" } },
  { selector: "node:selected", style: {
    "overlay-color": "#1a56db", "overlay-opacity": 0.22, "overlay-padding": 7 } },
  {
    selector: "edge",
    style: {
      width: 1.5, "line-color": "#6b7480", "target-arrow-color": "#6b7480",
      "target-arrow-shape": "triangle", "curve-style": "bezier", "arrow-scale": 0.9,
    },
  },
  { selector: "edge.labelled", style: {
    label: "data(relation)", "font-size": 10, color: "#333", "text-rotation": "autorotate",
    "text-background-color": "#fff", "text-background-opacity": 0.9, "text-background-padding": 1 } },
  { selector: "edge:selected, edge.near", style: { width: 3, "line-color": "#1a56db", "target-arrow-color": "#1a56db" } },
];

/**
 * Draws `graph` (the API's JSON) into `container`; `marksOf(node)` gives {denied, flagged[]};
 * `onSelect(id)` is called when a node is tapped. Resolves to a handle with `select(id)`,
 * `remark(marksOf)` and `destroy()`, or rejects when the library cannot be loaded.
 */
export async function drawGraph(container, graph, marksOf, onSelect) {
  const cytoscape = await loadLibrary();
  const ids = new Set(graph.nodes.map((n) => n.id));
  const elements = [];
  for (const node of graph.nodes) {
    const [shape, fill] = kindOf(node.type);
    const marks = marksOf(node);
    elements.push({
      group: "nodes",
      data: { id: node.id, type: node.type, shape, fill, caption: nodeCaption(node, marks) },
      classes: classesOf(node, marks, graph.root),
    });
  }
  const labelled = graph.edges.length <= 60;
  graph.edges.forEach((edge, index) => {
    if (!ids.has(edge.source) || !ids.has(edge.target)) return;
    elements.push({
      group: "edges",
      data: { id: `e${index}`, source: edge.source, target: edge.target, relation: edge.relation },
      classes: labelled ? "labelled" : "",
    });
  });
  container.replaceChildren();
  const cy = cytoscape({
    container, elements, style: STYLE, minZoom: 0.05, maxZoom: 2.5, boxSelectionEnabled: false,
    layout: { name: "preset", positions: layered(graph, container.clientWidth || 800), fit: false },
  });
  frame(cy, cy.getElementById(graph.root));
  cy.on("tap", "node", (event) => onSelect(event.target.id()));
  container.dataset.drawn = String(cy.nodes().length);
  container.cy = cy; // for scripts and tests: where each node is drawn
  const resize = new ResizeObserver(() => { cy.resize(); });
  resize.observe(container);
  return {
    select(id) {
      cy.elements().unselect();
      cy.edges().removeClass("near");
      const node = cy.getElementById(id);
      if (node.empty()) return;
      node.select();
      node.connectedEdges().addClass("near");
      // A node already in view keeps the view; one out of it brings its neighbours into view.
      const extent = cy.extent();
      const box = node.boundingBox();
      if (box.x1 < extent.x1 || box.x2 > extent.x2 || box.y1 < extent.y1 || box.y2 > extent.y2) {
        frame(cy, node);
      }
    },
    remark(newMarksOf) {
      for (const node of graph.nodes) {
        const element = cy.getElementById(node.id);
        const marks = newMarksOf(node);
        element.data("caption", nodeCaption(node, marks));
        element.classes(classesOf(node, marks, graph.root));
      }
    },
    destroy() { resize.disconnect(); cy.destroy(); },
  };
}

/** The whole graph when it fits at a legible zoom; else the node and its neighbours, at a
 * legible zoom at least (centred on the node when even they do not fit). */
function frame(cy, node) {
  const clamp = () => { if (cy.zoom() > MAX_FIT_ZOOM) cy.zoom(MAX_FIT_ZOOM); };
  cy.fit(cy.elements(), 24);
  clamp();
  if (cy.zoom() >= LEGIBLE_ZOOM) { cy.center(); return; }
  if (node.empty()) { cy.zoom(LEGIBLE_ZOOM); cy.center(); return; }
  const near = node.closedNeighborhood();
  cy.fit(near, 24);
  clamp();
  if (cy.zoom() < LEGIBLE_ZOOM) {
    cy.zoom(LEGIBLE_ZOOM);
    cy.center(node);
  } else {
    cy.center(near);
  }
  fill(cy);
}

/** Pans (keeping the zoom) so that no side of the view shows blank space while the graph
 * runs past the opposite side: more of the graph in view, the selection still in it. */
function fill(cy) {
  const pad = 24;
  const box = cy.elements().renderedBoundingBox();
  const shift = (low, high, size) => {
    if (high < size - pad && low < pad) return Math.min(size - pad - high, pad - low);
    if (low > pad && high > size - pad) return -Math.min(low - pad, high - (size - pad));
    return 0;
  };
  cy.panBy({ x: shift(box.x1, box.x2, cy.width()), y: shift(box.y1, box.y2, cy.height()) });
}

function classesOf(node, marks, root) {
  return [node.id === root ? "root" : "", marks.denied ? "denied" : "",
    marks.flagged.length ? "flagged" : "", marks.cut ? "cut" : ""].filter(Boolean).join(" ");
}
