"""The single, self-contained page of `catsdogs serve`: inline CSS and JS, no external resource."""

# Nothing but this page's own inline code and the API on the same origin: works offline, and an
# uploaded file name can never become markup (the script only ever sets textContent).
PAGE_HEADERS = {
    "Content-Security-Policy": "default-src 'none'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; "
                               "img-src data: blob:; connect-src 'self'; base-uri 'none'; form-action 'none'; "
                               "frame-ancestors 'none'",
    "X-Content-Type-Options": "nosniff",
    "Cache-Control": "no-store",
}

PAGE = """<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>catsdogs</title>
<link rel="icon" href="data:,">
<style>
  :root { --fg: #1d2329; --muted: #5f6b76; --bg: #f4f6f8; --card: #fff; --line: #dde3e8;
          --accent: #2563eb; --c0: #d97706; --c1: #2563eb; --bad: #b91c1c; }
  * { box-sizing: border-box; }
  body { margin: 0; font: 16px/1.45 system-ui, -apple-system, "Segoe UI", Roboto, sans-serif;
         color: var(--fg); background: var(--bg); }
  main { max-width: 1100px; margin: 0 auto; padding: 16px; }
  h1 { font-size: 1.5rem; margin: 0 0 2px; }
  #info { color: var(--muted); font-size: .9rem; margin: 0 0 14px; min-height: 1.3em; }
  #drop { display: flex; flex-direction: column; align-items: center; justify-content: center; gap: 10px;
          border: 2px dashed #9aa8b5; border-radius: 14px; background: var(--card); padding: 26px 16px;
          text-align: center; transition: border-color .15s, background .15s; }
  #drop.over { border-color: var(--accent); background: #eef4ff; }
  #drop p { margin: 0; color: var(--muted); }
  .pick { position: relative; display: inline-block; background: var(--accent); color: #fff; font-weight: 600;
          border-radius: 10px; padding: 12px 22px; cursor: pointer; }
  .pick:focus-within { outline: 3px solid #93c5fd; }
  .pick input { position: absolute; inset: 0; width: 100%; height: 100%; opacity: 0; cursor: pointer; }
  #results { display: grid; grid-template-columns: repeat(auto-fill, minmax(300px, 1fr)); gap: 14px;
             margin-top: 16px; align-items: start; }
  .card { background: var(--card); border: 1px solid var(--line); border-radius: 14px; padding: 12px;
          min-width: 0; }
  .name { font-size: .85rem; color: var(--muted); white-space: nowrap; overflow: hidden; text-overflow: ellipsis; }
  .pics { display: grid; grid-template-columns: 1fr 1fr; gap: 8px; margin: 8px 0; }
  .pics figure { margin: 0; }
  .pics img { width: 100%; aspect-ratio: 1; object-fit: cover; border-radius: 8px; background: #e9edf1;
              display: block; }
  .pics.single { grid-template-columns: 1fr; }
  .pics.single img { aspect-ratio: 4 / 3; object-fit: contain; }
  .pics figcaption { font-size: .75rem; color: var(--muted); text-align: center; }
  .pics .none { display: flex; align-items: center; justify-content: center; aspect-ratio: 1; border-radius: 8px;
                background: #e9edf1; color: var(--muted); font-size: .8rem; text-align: center; padding: 6px; }
  .label { font-size: 1.6rem; font-weight: 700; text-transform: capitalize; min-height: 1.2em; }
  .label.error { text-transform: none; font-size: 1rem; }
  .label.pending { color: var(--muted); font-size: 1rem; font-weight: 400; }
  .bar { display: grid; grid-template-columns: 4.5em 1fr 3.6em; align-items: center; gap: 8px; font-size: .9rem;
         margin: 4px 0; }
  .bar .cls { overflow: hidden; text-overflow: ellipsis; text-transform: capitalize; }
  .track { position: relative; height: 12px; background: #e9edf1; border-radius: 6px; overflow: visible; }
  .fill { height: 100%; border-radius: 6px; }
  .tick { position: absolute; top: -4px; bottom: -4px; width: 2px; background: var(--fg); }
  .pct { text-align: right; font-variant-numeric: tabular-nums; }
  .note { font-size: .8rem; color: var(--muted); margin-top: 6px; }
  .error { color: var(--bad); font-weight: 600; overflow-wrap: anywhere; }
  @media (max-width: 480px) {
    main { padding: 12px; }
    h1 { font-size: 1.3rem; }
    #results { grid-template-columns: 1fr; }
  }
</style>
</head>
<body>
<main>
  <h1 id="title">catsdogs</h1>
  <p id="info">loading the model&hellip;</p>
  <section id="drop" aria-label="add photos">
    <label class="pick">Choose photos
      <input id="file" type="file" accept="image/*" multiple>
    </label>
    <p>or drop them here &mdash; each one is classified on this server</p>
  </section>
  <section id="results" aria-live="polite"></section>
</main>
<script>
"use strict";
const $ = (selector) => document.querySelector(selector);
let model = null;
const queue = [];
let running = 0;
const PARALLEL = 2;

function el(tag, cls, text) {
  const node = document.createElement(tag);
  if (cls) node.className = cls;
  if (text !== undefined) node.textContent = text;
  return node;
}

async function loadModel() {
  try {
    const response = await fetch("model");
    model = await response.json();
    if (!response.ok) throw new Error(model.error || response.status);
    $("#title").textContent = model.classes.map((c) => c[0].toUpperCase() + c.slice(1)).join(" or ") + "?";
    const origin = {tuned: "tuned on validation", argument: "set at start", default: "default"}[model.threshold_origin];
    $("#info").textContent = `model ${model.model}${model.backbone ? " (" + model.backbone + ")" : ""}` +
      ` \\u00b7 ${model.input_size} px` +
      (model.classes.length === 2 ? ` \\u00b7 threshold ${model.threshold.toFixed(3)} (${origin})` : "") +
      (model.explain_available ? " \\u00b7 Grad-CAM on" : "");
  } catch (error) {
    $("#info").textContent = "cannot reach the model: " + error.message;
  }
}

function addFiles(files) {
  for (const file of files) {
    const card = makeCard(file);
    $("#results").prepend(card.root);
    queue.push(() => classify(file, card));
  }
  pump();
}

function pump() {
  while (running < PARALLEL && queue.length) {
    running += 1;
    queue.shift()().finally(() => { running -= 1; pump(); });
  }
}

function makeCard(file) {
  const root = el("article", "card");
  root.dataset.state = "pending";
  root.append(el("div", "name", file.name));
  const pics = el("div", "pics");
  const photo = el("figure");
  const img = el("img");
  img.alt = "photo " + file.name;
  // A format the browser cannot show (TIFF, say) still gets classified: a placeholder stands in.
  img.addEventListener("error", () => img.replaceWith(el("div", "none", "no preview")));
  if (file.type.startsWith("image/")) img.src = URL.createObjectURL(file);
  photo.append(file.type.startsWith("image/") ? img : el("div", "none", "no preview"), el("figcaption", "", "photo"));
  const cam = el("figure");
  cam.append(el("div", "none", "Grad-CAM"), el("figcaption", "", "what the model looked at"));
  pics.append(photo, cam);
  const label = el("div", "label pending", "classifying\\u2026");
  const bars = el("div", "bars");
  const note = el("div", "note");
  root.append(pics, label, bars, note);
  return {root, pics, cam, img, label, bars, note};
}

async function post(file, explain) {
  const form = new FormData();
  form.append("file", file, file.name);
  const response = await fetch("predict" + (explain ? "?explain=true" : ""), {method: "POST", body: form});
  let body;
  try { body = await response.json(); } catch (e) { body = {error: "HTTP " + response.status}; }
  return {status: response.status, ok: response.ok, body};
}

async function classify(file, card) {
  try {
    await ready;
    if (model && file.size > model.max_upload_bytes) {
      throw new Error(`too large: ${(file.size / 1e6).toFixed(1)} MB (limit ${(model.max_upload_bytes / 1e6)} MB)`);
    }
    let explain = Boolean(model && model.explain_available);
    let result = await post(file, explain);
    let camNote = "";
    if (result.status === 501 && explain) {
      camNote = result.body.error;
      explain = false;
      result = await post(file, false);
    }
    if (!result.ok) throw new Error(result.body.error || "HTTP " + result.status);
    show(card, result.body.predictions[0], camNote);
  } catch (error) {
    card.label.className = "label error";
    card.label.textContent = "";
    card.label.append(el("span", "error", error.message));
    card.root.dataset.state = "error";
    if (card.img.isConnected && card.img.complete && card.img.naturalWidth) photoOnly(card);
    else card.pics.remove();
  }
}

function photoOnly(card) {
  card.cam.remove();
  card.pics.classList.add("single");
  card.pics.querySelector("figcaption").textContent = "";
}

function show(card, p, camNote) {
  card.label.className = "label";
  card.label.textContent = p.label;
  const classes = Object.keys(p.probabilities);
  classes.forEach((name, i) => {
    const value = p.probabilities[name];
    const row = el("div", "bar");
    const track = el("div", "track");
    const fill = el("div", "fill");
    fill.style.width = (100 * value).toFixed(1) + "%";
    fill.style.background = classes.length === 2 ? (i === 0 ? "var(--c0)" : "var(--c1)")
      : `hsl(${Math.round(360 * i / classes.length)}, 60%, 45%)`;
    track.append(fill);
    if (i === 1 && p.threshold !== null) {
      const tick = el("div", "tick");
      tick.style.left = `calc(${(100 * p.threshold).toFixed(1)}% - 1px)`;
      tick.title = "threshold";
      track.append(tick);
    }
    row.append(el("span", "cls", name), track, el("span", "pct", (100 * value).toFixed(1) + "%"));
    card.bars.append(row);
  });
  card.note.textContent = (p.threshold === null ? "the most probable class"
    : `${classes[1]} when p(${classes[1]}) \\u2265 ${p.threshold.toFixed(3)}`) +
    (camNote ? " \\u00b7 " + camNote : "");
  if (p.gradcam) {
    const img = el("img");
    img.src = p.gradcam.overlay;
    img.alt = "Grad-CAM for " + p.gradcam.target;
    card.cam.firstChild.replaceWith(img);
    card.cam.lastChild.textContent = `Grad-CAM: why ${p.gradcam.target}`;
  } else {
    photoOnly(card);
  }
  card.root.dataset.state = "done";
}

$("#file").addEventListener("change", (event) => { addFiles(event.target.files); event.target.value = ""; });
const drop = $("#drop");
for (const name of ["dragenter", "dragover"]) {
  drop.addEventListener(name, (event) => { event.preventDefault(); drop.classList.add("over"); });
}
for (const name of ["dragleave", "drop"]) {
  drop.addEventListener(name, (event) => { event.preventDefault(); drop.classList.remove("over"); });
}
drop.addEventListener("drop", (event) => addFiles(event.dataTransfer.files));
// A photo dropped beside the zone must not replace the page.
window.addEventListener("dragover", (event) => event.preventDefault());
window.addEventListener("drop", (event) => event.preventDefault());
const ready = loadModel();
</script>
</body>
</html>
"""
