// brushwork studio: the page. Plain JavaScript; everything comes from the studio's own API.
"use strict";

const $ = (sel) => document.querySelector(sel);
const el = (tag, props = {}, ...children) => {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(props)) {
    if (k === "class") e.className = v;
    else if (k === "dataset") Object.assign(e.dataset, v);
    else if (k in e && typeof v !== "string") e[k] = v;
    else e.setAttribute(k, v);
  }
  for (const c of children) e.append(c instanceof Node ? c : document.createTextNode(String(c)));
  return e;
};
const MASK_COLOURS = ["#e4572e", "#29a19c", "#f3a712", "#7b5ea7", "#4c86c6", "#c2457a"];
const ACTIVE = new Set(["queued", "running"]);

const S = {
  token: null,
  client: null,
  methods: [],
  method: null,
  content: null,          // {file, url, kind, w, h}
  styles: [],             // {file|null, name, url, weight, bundled}
  labels: new Map(),      // label index -> weight (label methods)
  masks: [],              // one canvas per style (white = that style)
  job: null,              // the job being watched
  source: null,           // its EventSource
  history: [],
};

// ------------------------------------------------------------------ API
function withToken(path) {
  if (!S.token) return path;
  return path + (path.includes("?") ? "&" : "?") + "token=" + encodeURIComponent(S.token);
}

async function api(path, opts = {}) {
  const headers = Object.assign({"X-Studio-Client": S.client}, opts.headers || {});
  if (S.token) headers["Authorization"] = "Bearer " + S.token;
  const r = await fetch(path, Object.assign({}, opts, {headers}));
  if (r.status === 401) {
    $("#token-bar").hidden = false;
    throw new Error("this studio needs its token");
  }
  let body = null;
  const type = r.headers.get("content-type") || "";
  if (type.includes("json")) body = await r.json();
  if (!r.ok) throw new Error((body && body.error) || `${r.status} ${r.statusText}`);
  return body;
}

function say(text, kind = "") {
  const m = $("#message");
  m.textContent = text;
  m.className = kind;
}

// scale a frame (an image with its overlay) to fit its stage, keeping the aspect ratio
function fitFrame(frame, w, h) {
  if (!w || !h) return;
  frame.dataset.w = w;
  frame.dataset.h = h;
  const stage = frame.parentElement;
  const sw = stage.clientWidth - 16, sh = stage.clientHeight - 16;
  if (sw <= 0 || sh <= 0) return;
  const s = Math.min(sw / w, sh / h);
  frame.style.width = `${Math.round(w * s)}px`;
  frame.style.height = `${Math.round(h * s)}px`;
}

function refit() {
  for (const f of document.querySelectorAll(".frame")) fitFrame(f, +f.dataset.w, +f.dataset.h);
  const p = $("#preview");
  if (p.naturalWidth) fitImage(p);
}

function fitImage(img) {
  const stage = img.parentElement;
  const s = Math.min((stage.clientWidth - 16) / img.naturalWidth, (stage.clientHeight - 16) / img.naturalHeight);
  if (s > 0) { img.style.width = `${Math.round(img.naturalWidth * s)}px`; img.style.height = `${Math.round(img.naturalHeight * s)}px`; }
}

function fmtSeconds(s) {
  if (s == null) return "";
  s = Math.round(s);
  return s >= 60 ? `${Math.floor(s / 60)} min ${s % 60} s` : `${s} s`;
}

// ------------------------------------------------------------------ start
async function init() {
  const params = new URLSearchParams(location.search);
  if (params.get("token")) {
    sessionStorage.setItem("brushwork-token", params.get("token"));
    history.replaceState(null, "", location.pathname);
  }
  S.token = sessionStorage.getItem("brushwork-token");
  S.client = localStorage.getItem("brushwork-client");
  if (!S.client) {
    S.client = Array.from(crypto.getRandomValues(new Uint8Array(8)),
                          (b) => b.toString(16).padStart(2, "0")).join("");
    localStorage.setItem("brushwork-client", S.client);
  }
  wire();
  try {
    const h = await api("/api/health");
    $("#health").textContent = `brushwork ${h.version} · ${h.workers} worker(s) · ` +
      `uploads up to ${h.limits.max_upload_mb} MB`;
    const [m, st] = await Promise.all([api("/api/methods"), api("/api/styles")]);
    S.methods = m.methods;
    renderMethods();
    renderBundled(st.styles);
    await refreshHistory();
  } catch (e) {
    $("#health").textContent = "not connected";
    say(e.message, "error");
  }
}

function wire() {
  $("#token-save").addEventListener("click", () => {
    S.token = $("#token-input").value.trim();
    sessionStorage.setItem("brushwork-token", S.token);
    $("#token-bar").hidden = true;
    init();
  });
  dropZone($("#content-drop"), $("#content-file"), (files) => setContent(files[0]));
  dropZone($("#style-drop"), $("#style-file"), (files) => {
    for (const f of files) addStyle({file: f, name: f.name, url: URL.createObjectURL(f)});
  });
  $("#method").addEventListener("change", () => selectMethod($("#method").value));
  $("#run").addEventListener("click", run);
  $("#cancel").addEventListener("click", cancel);
  $("#refresh").addEventListener("click", refreshHistory);
  for (const b of document.querySelectorAll(".tabs button")) {
    b.addEventListener("click", () => showView(b.dataset.view));
  }
  $("#compare-range").addEventListener("input", compare);
  setupCompareDrag();
  setupMaskBrush();
  window.addEventListener("resize", refit);
  $("#preview").addEventListener("load", () => fitImage($("#preview")));
  $("#compare-after").addEventListener("load", () => {
    const a = $("#compare-after");
    fitFrame($("#compare-frame"), a.naturalWidth, a.naturalHeight);
  });
}

function dropZone(zone, input, onFiles) {
  input.addEventListener("change", () => { if (input.files.length) onFiles([...input.files]); input.value = ""; });
  zone.addEventListener("dragover", (e) => { e.preventDefault(); zone.classList.add("over"); });
  zone.addEventListener("dragleave", () => zone.classList.remove("over"));
  zone.addEventListener("drop", (e) => {
    e.preventDefault();
    zone.classList.remove("over");
    if (e.dataTransfer.files.length) onFiles([...e.dataTransfer.files]);
  });
}

function showView(name) {
  for (const b of document.querySelectorAll(".tabs button")) {
    b.classList.toggle("active", b.dataset.view === name);
  }
  for (const v of ["compose", "live", "result"]) $("#view-" + v).hidden = v !== name;
  refit();
}

// ------------------------------------------------------------------ content
function setContent(file) {
  const url = URL.createObjectURL(file);
  const video = file.type.startsWith("video/") || /\.(mp4|m4v|mov|mkv|webm|avi)$/i.test(file.name);
  $("#content-name").textContent = file.name;
  $("#stage").classList.remove("empty");
  const img = $("#content-view"), vid = $("#content-video");
  if (video) {
    S.content = {file, url, kind: "video", w: 0, h: 0};
    $("#content-frame").hidden = true;
    vid.hidden = false;
    vid.src = url;
    $("#mask-canvas").hidden = true;
    updateMaskTools();
    showView("compose");
    return;
  }
  vid.hidden = true;
  $("#content-frame").hidden = false;
  img.onload = () => {
    S.content = {file, url, kind: "image", w: img.naturalWidth, h: img.naturalHeight};
    fitFrame($("#content-frame"), img.naturalWidth, img.naturalHeight);
    resetMasks();
    updateMaskTools();
  };
  img.src = url;
  $("#compare-before").src = url;
  showView("compose");
}

// ------------------------------------------------------------------ styles
function renderBundled(styles) {
  const box = $("#bundled-styles");
  box.replaceChildren();
  for (const s of styles) {
    const b = el("button", {type: "button", class: "thumb", title: s.title, dataset: {name: s.name}},
                 el("img", {src: withToken(s.url), alt: s.name}), el("span", {}, s.name));
    b.addEventListener("click", async () => {
      try {
        const r = await fetch(withToken(s.url));
        const blob = await r.blob();
        addStyle({file: new File([blob], s.name + ".png", {type: "image/png"}), name: s.name,
                  url: URL.createObjectURL(blob), bundled: true});
      } catch (e) { say(e.message, "error"); }
    });
    box.append(b);
  }
}

function addStyle(s) {
  s.weight = 1;
  S.styles.push(s);
  renderStyleList();
  resetMasks(true);
}

function renderStyleList() {
  const list = $("#style-list");
  list.replaceChildren();
  const m = S.method;
  if (!m || m.capabilities.styles !== "images") return;
  S.styles.forEach((s, i) => {
    const w = el("input", {type: "number", min: "0", step: "0.1", value: String(s.weight),
                           title: "weight of this style", "aria-label": `weight of ${s.name}`});
    w.addEventListener("input", () => { s.weight = parseFloat(w.value) || 0; });
    const rm = el("button", {type: "button", class: "small", title: "remove"}, "×");
    rm.addEventListener("click", () => { S.styles.splice(i, 1); renderStyleList(); resetMasks(true); });
    const swatch = el("span", {class: "swatch"});
    swatch.style.background = MASK_COLOURS[i % MASK_COLOURS.length];
    list.append(el("li", {class: "style-item"}, swatch, el("img", {src: s.url, alt: s.name}),
                   el("span", {class: "name"}, s.name), w, rm));
  });
}

function renderLabels() {
  const m = S.method, box = $("#label-list");
  box.replaceChildren();
  S.labels = new Map([[0, 1]]);
  (m.labels || []).forEach((label, i) => {
    const cb = el("input", {type: "checkbox", checked: i === 0, dataset: {label: String(i)}});
    const w = el("input", {type: "number", min: "0", step: "0.1", value: "1", class: "weight",
                           "aria-label": `weight of ${label}`});
    const sync = () => {
      if (cb.checked) S.labels.set(i, parseFloat(w.value) || 0); else S.labels.delete(i);
      resetMasks(true);
    };
    cb.addEventListener("change", sync);
    w.addEventListener("input", sync);
    box.append(el("label", {class: "label-item"}, cb, el("span", {}, label), w));
  });
}

function styleCount() {
  const m = S.method;
  if (!m) return 0;
  if (m.capabilities.styles === "images") return S.styles.length;
  if (m.capabilities.styles === "labels") return S.labels.size;
  return 0;
}

function styleNames() {
  const m = S.method;
  if (m.capabilities.styles === "images") return S.styles.map((s) => s.name);
  return [...S.labels.keys()].map((i) => m.labels[i]);
}

// ------------------------------------------------------------------ methods and controls
function renderMethods() {
  const sel = $("#method");
  sel.replaceChildren();
  for (const m of S.methods) sel.append(el("option", {value: m.name}, m.name));
  const preferred = S.methods.find((m) => m.name === "adain") ? "adain" : S.methods[0].name;
  sel.value = preferred;
  selectMethod(preferred);
}

function selectMethod(name) {
  const m = S.methods.find((x) => x.name === name);
  S.method = m;
  $("#method").value = name;
  $("#method-summary").textContent = m.summary;
  const kind = m.capabilities.styles;
  $("#image-styles").hidden = kind !== "images";
  $("#label-styles").hidden = kind !== "labels";
  $("#builtin-note").hidden = kind !== "builtin";
  if (kind === "labels") renderLabels();
  renderStyleList();
  renderOptions(m);
  renderControls(m);
  resetMasks(true);
  updateMaskTools();
}

function renderOptions(m) {
  const box = $("#options");
  box.replaceChildren();
  for (const [name, o] of Object.entries(m.options || {})) {
    const sel = el("select", {id: "option-" + name, dataset: {option: name}});
    for (const c of o.choices) sel.append(el("option", {value: c}, c));
    sel.value = name === "encoder" && o.choices.includes("small") ? "small" : o.default;
    box.append(el("div", {class: "row"}, el("label", {for: sel.id}, name), sel));
  }
}

function step(c) {
  if (c.kind === "int") return "1";
  const span = c.high - c.low;
  return String(span <= 2 ? 0.01 : span <= 20 ? 0.05 : span / 200);
}

function renderControls(m) {
  const box = $("#controls");
  box.replaceChildren();
  for (const c of m.controls) {
    if (c.type === "mask" || c.name === m.label_control) continue;
    const id = "control-" + c.name;
    let input, out = null;
    if (c.type === "slider") {
      input = el("input", {type: "range", min: String(c.low), max: String(c.high), step: step(c)});
      out = el("output", {for: id});
    } else if (c.type === "number") {
      input = el("input", {type: "number", step: c.kind === "int" ? "1" : "any"});
      if (c.low != null) input.min = String(c.low);
      if (c.high != null) input.max = String(c.high);
    } else if (c.type === "toggle") {
      input = el("input", {type: "checkbox"});
    } else if (c.type === "select") {
      input = el("select");
      for (const ch of c.choices) input.append(el("option", {value: String(ch)}, String(ch)));
    } else if (c.type === "image") {
      input = el("input", {type: "file", accept: "image/*"});
    } else {
      input = el("input", {type: "text", spellcheck: false});
    }
    input.id = id;
    input.dataset.control = c.name;
    const row = el("div", {class: "row control", title: c.help},
                   el("label", {for: id}, c.name.replaceAll("_", " ")), input);
    if (out) row.append(out);
    let auto = null;
    if ((c.type === "slider") && c.default == null) {
      auto = el("label", {class: "inline auto"}, el("input", {type: "checkbox", checked: true}), "auto");
      row.append(auto);
    }
    const reset = el("button", {type: "button", class: "small reset", title: "back to the default"}, "↺");
    row.append(reset);
    const help = () => { $("#control-help").textContent = `${c.name} (${c.flag}): ${c.help}`; };
    row.addEventListener("mouseenter", help);
    row.addEventListener("focusin", help);
    const setDefault = () => {
      input.dataset.dirty = "";
      row.classList.remove("dirty");
      if (c.type === "toggle") input.checked = !!c.default;
      else if (c.type === "image") input.value = "";
      else if (c.type === "slider") input.value = String(c.default == null ? c.low : c.default);
      else if (Array.isArray(c.default)) input.value = c.default.join(",");
      else input.value = c.default == null ? "" : String(c.default);
      if (auto) { auto.firstChild.checked = true; input.disabled = true; }
      if (out) out.textContent = auto ? "auto" : input.value;
      if (c.default == null && c.type === "number") input.placeholder = "default";
    };
    const touched = () => {
      input.dataset.dirty = "1";
      row.classList.add("dirty");
      if (out) out.textContent = input.value;
    };
    input.addEventListener("input", touched);
    input.addEventListener("change", touched);
    reset.addEventListener("click", setDefault);
    if (auto) {
      auto.firstChild.addEventListener("change", () => {
        input.disabled = auto.firstChild.checked;
        if (auto.firstChild.checked) setDefault(); else touched();
      });
    }
    setDefault();
    box.append(row);
  }
}

function controlValues() {
  const m = S.method, values = {}, images = {};
  for (const input of document.querySelectorAll("#controls [data-control]")) {
    if (!input.dataset.dirty || input.disabled) continue;
    const c = m.controls.find((x) => x.name === input.dataset.control);
    if (c.type === "image") { if (input.files.length) images[c.name] = input.files[0]; continue; }
    if (c.type === "toggle") values[c.name] = input.checked;
    else if (c.type === "slider" || c.type === "number") {
      if (input.value === "") continue;
      values[c.name] = Number(input.value);
    } else if (input.value.trim() !== "") values[c.name] = input.value.trim();
  }
  if (m.label_control && S.labels.size) {
    const parts = [...S.labels.entries()];
    values[m.label_control] = parts.length === 1 ? String(parts[0][0])
      : parts.map(([i, w]) => `${i}:${w}`).join(",");
  }
  return {values, images};
}

// ------------------------------------------------------------------ mask brush
function maskSize() {
  const c = S.content;
  const s = Math.min(1, 1024 / Math.max(c.w, c.h));
  return [Math.max(1, Math.round(c.w * s)), Math.max(1, Math.round(c.h * s))];
}

function resetMasks(keep = false) {
  const n = styleCount();
  if (!S.content || S.content.kind !== "image") { S.masks = []; drawMasks(); return; }
  const [w, h] = maskSize();
  const old = keep ? S.masks : [];
  S.masks = [];
  for (let i = 0; i < n; i++) {
    const prev = old[i];
    if (prev && prev.width === w && prev.height === h) { S.masks.push(prev); continue; }
    const c = document.createElement("canvas");
    c.width = w; c.height = h;
    S.masks.push(c);
  }
  const sel = $("#mask-style");
  sel.replaceChildren();
  styleNames().forEach((name, i) => sel.append(el("option", {value: String(i)}, `${i + 1}: ${name}`)));
  const overlay = $("#mask-canvas");
  overlay.width = w; overlay.height = h;
  drawMasks();
}

function updateMaskTools() {
  const m = S.method;
  const ok = m && m.masks && S.content && S.content.kind === "image";
  $("#mask-tools").hidden = !ok;
  if (!ok) $("#mask-enable").checked = false;
  $("#mask-canvas").hidden = !ok || !$("#mask-enable").checked;
  $("#mask-controls").hidden = !ok || !$("#mask-enable").checked;
}

function drawMasks() {
  const overlay = $("#mask-canvas");
  const ctx = overlay.getContext("2d");
  ctx.clearRect(0, 0, overlay.width, overlay.height);
  S.masks.forEach((m, i) => {
    // tint: the mask's painted pixels in the style's colour
    const tmp = document.createElement("canvas");
    tmp.width = m.width; tmp.height = m.height;
    const t = tmp.getContext("2d");
    t.drawImage(m, 0, 0);
    t.globalCompositeOperation = "source-in";
    t.fillStyle = MASK_COLOURS[i % MASK_COLOURS.length];
    t.fillRect(0, 0, tmp.width, tmp.height);
    ctx.globalAlpha = 0.5;
    ctx.drawImage(tmp, 0, 0);
  });
  ctx.globalAlpha = 1;
}

function setupMaskBrush() {
  const overlay = $("#mask-canvas");
  let painting = false, last = null;
  const at = (e) => {
    const r = overlay.getBoundingClientRect();
    return [(e.clientX - r.left) * overlay.width / r.width, (e.clientY - r.top) * overlay.height / r.height];
  };
  const paint = (e) => {
    const i = parseInt($("#mask-style").value || "0", 10);
    const m = S.masks[i];
    if (!m) return;
    const ctx = m.getContext("2d");
    const r = overlay.getBoundingClientRect();
    const size = parseFloat($("#brush-size").value) * overlay.width / Math.max(1, r.width);
    const [x, y] = at(e);
    ctx.globalCompositeOperation = $("#mask-erase").checked ? "destination-out" : "source-over";
    ctx.strokeStyle = ctx.fillStyle = "#fff";
    ctx.lineWidth = size;
    ctx.lineCap = ctx.lineJoin = "round";
    ctx.beginPath();
    if (last) { ctx.moveTo(last[0], last[1]); ctx.lineTo(x, y); ctx.stroke(); }
    else { ctx.arc(x, y, size / 2, 0, Math.PI * 2); ctx.fill(); }
    last = [x, y];
    drawMasks();
  };
  overlay.addEventListener("pointerdown", (e) => { painting = true; last = null; overlay.setPointerCapture(e.pointerId); paint(e); });
  overlay.addEventListener("pointermove", (e) => { if (painting) paint(e); });
  const end = () => { painting = false; last = null; };
  overlay.addEventListener("pointerup", end);
  overlay.addEventListener("pointercancel", end);
  $("#mask-enable").addEventListener("change", updateMaskTools);
  $("#mask-clear").addEventListener("click", () => {
    for (const m of S.masks) m.getContext("2d").clearRect(0, 0, m.width, m.height);
    drawMasks();
  });
  $("#mask-fill").addEventListener("click", () => {
    const m = S.masks[parseInt($("#mask-style").value || "0", 10)];
    if (!m) return;
    const ctx = m.getContext("2d");
    ctx.globalCompositeOperation = "source-over";
    ctx.fillStyle = "#fff";
    ctx.fillRect(0, 0, m.width, m.height);
    drawMasks();
  });
}

function maskBlob(m) {
  // white where painted, black elsewhere, as the `masks` control takes them
  const c = document.createElement("canvas");
  c.width = m.width; c.height = m.height;
  const ctx = c.getContext("2d");
  ctx.fillStyle = "#000";
  ctx.fillRect(0, 0, c.width, c.height);
  ctx.drawImage(m, 0, 0);
  return new Promise((resolve) => c.toBlob(resolve, "image/png"));
}

// ------------------------------------------------------------------ jobs
async function run() {
  const m = S.method;
  if (!S.content) return say("Pick a photo or a video first.", "error");
  if (m.capabilities.styles === "images" && !S.styles.length) return say("Add at least one style.", "error");
  if (m.capabilities.styles === "labels" && !S.labels.size) return say("Pick at least one built-in style.", "error");
  const form = new FormData();
  form.append("content", S.content.file, S.content.file.name);
  form.append("method", m.name);
  const {values, images} = controlValues();
  form.append("controls", JSON.stringify(values));
  const options = {};
  for (const sel of document.querySelectorAll("#options [data-option]")) options[sel.dataset.option] = sel.value;
  form.append("options", JSON.stringify(options));
  form.append("size", $("#size").value || "0");
  form.append("seed", $("#seed").value || "0");
  if (m.capabilities.styles === "images") {
    for (const s of S.styles) form.append("style", s.file, s.file.name);
    if (S.styles.length > 1 && S.styles.some((s) => s.weight !== 1)) {
      form.append("style_weights", JSON.stringify(S.styles.map((s) => s.weight)));
    }
  }
  for (const [name, file] of Object.entries(images)) form.append("image_" + name, file, file.name);
  if ($("#mask-enable").checked && !$("#mask-tools").hidden) {
    const blobs = await Promise.all(S.masks.map(maskBlob));
    blobs.forEach((b, i) => form.append("mask", b, `mask${i + 1}.png`));
  }
  $("#run").disabled = true;
  say("Uploading…");
  try {
    const r = await api("/api/jobs", {method: "POST", body: form});
    watch(r.id);
    refreshHistory();
  } catch (e) {
    say(e.message, "error");
    $("#run").disabled = false;
  }
}

function watch(id) {
  if (S.source) S.source.close();
  S.job = {id, previewUrl: null};
  $("#cancel").disabled = false;
  $("#run").disabled = false;
  $("#progress").value = 0;
  $("#preview").removeAttribute("src");
  $("#preview-empty").hidden = false;
  showView("live");
  say("Queued…");
  const src = new EventSource(withToken(`/api/jobs/${id}/events`));
  S.source = src;
  src.addEventListener("progress", (e) => update(JSON.parse(e.data)));
  src.addEventListener("end", (e) => { src.close(); finish(JSON.parse(e.data)); });
  src.onerror = () => { if (src.readyState === EventSource.CLOSED) say("Lost the connection to the studio.", "error"); };
}

function update(job) {
  if (!S.job || job.id !== S.job.id) return;
  const p = job.progress;
  $("#progress").value = p.fraction;
  const bits = [job.state];
  if (p.total) bits.push(`${job.kind === "video" ? "frame" : "step"} ${p.step}/${p.total}`);
  if (p.message) bits.push(p.message);
  if (p.eta != null) bits.push(`about ${fmtSeconds(p.eta)} left`);
  else if (p.elapsed) bits.push(`${fmtSeconds(p.elapsed)}`);
  $("#progress-text").textContent = bits.join(" · ");
  say(job.state === "queued" ? "Queued…" : "Running…");
  if (job.preview_url && job.preview_url !== S.job.previewUrl) {
    S.job.previewUrl = job.preview_url;
    $("#preview").src = withToken(job.preview_url);
    $("#preview-empty").hidden = true;
  }
}

function finish(job) {
  update(job);
  $("#cancel").disabled = true;
  S.source = null;
  if (job.state === "done") {
    say(`Done in ${fmtSeconds(job.progress.elapsed)}.`, "ok");
    showResult(job);
  } else if (job.state === "failed") {
    say(job.error || "The job failed.", "error");
  } else {
    say(`The job was ${job.state}.`);
  }
  refreshHistory();
}

async function cancel() {
  if (!S.job) return;
  try {
    const j = await api(`/api/jobs/${S.job.id}`, {method: "DELETE"});
    say(`Job ${j.state}.`);
  } catch (e) { say(e.message, "error"); }
}

// ------------------------------------------------------------------ result
function showResult(job) {
  const box = $("#compare");
  box.classList.remove("empty");
  const video = job.kind === "video";
  $("#result-video").hidden = !video;
  $("#compare-frame").hidden = video;
  $("#compare-range").hidden = video;
  if (video) {
    $("#result-video").src = withToken(job.result_url);
  } else {
    $("#compare-after").src = withToken(job.result_url);
    $("#compare-before").src = withToken(job.content_url);
    compare();
  }
  const links = $("#result-links");
  links.replaceChildren(
    el("a", {href: withToken(job.result_url + "?download=1"), download: ""}, video ? "download video" : "download image"),
    " · ",
    el("a", {href: withToken(job.recipe_url + "?download=1"), download: ""}, "download recipe"),
    " · ",
    el("span", {class: "muted"}, `${job.method} · ${Object.keys(job.controls).length} control(s) set · seed ${job.seed}`));
  showView("result");
}

function compare() {
  const v = $("#compare-range").value;
  $("#compare-before").style.clipPath = `inset(0 ${100 - v}% 0 0)`;
  $("#compare-handle").style.left = `${v}%`;
}

function setupCompareDrag() {
  const box = $("#compare");
  let drag = false;
  const move = (e) => {
    const r = $("#compare-after").getBoundingClientRect();
    if (!r.width) return;
    const v = Math.max(0, Math.min(100, (e.clientX - r.left) / r.width * 100));
    $("#compare-range").value = String(Math.round(v));
    compare();
  };
  box.addEventListener("pointerdown", (e) => { if (e.target.tagName === "VIDEO") return; drag = true; box.setPointerCapture(e.pointerId); move(e); });
  box.addEventListener("pointermove", (e) => { if (drag) move(e); });
  box.addEventListener("pointerup", () => { drag = false; });
}

// ------------------------------------------------------------------ history
async function refreshHistory() {
  let jobs;
  try { jobs = (await api("/api/jobs?limit=60")).jobs; } catch (e) { return; }
  S.history = jobs;
  const box = $("#gallery");
  box.replaceChildren();
  if (!jobs.length) box.append(el("p", {class: "muted"}, "No jobs yet."));
  for (const j of jobs) box.append(card(j));
  clearTimeout(refreshHistory.timer);
  if (jobs.some((j) => ACTIVE.has(j.state))) refreshHistory.timer = setTimeout(refreshHistory, 3000);
}

function card(j) {
  const thumb = j.state === "done" && j.kind === "image" ? j.result_url
    : (j.kind === "image" ? j.content_url : null);
  const pic = thumb ? el("img", {src: withToken(thumb), alt: `${j.method} result`, loading: "lazy"})
    : el("div", {class: "nothumb"}, j.kind);
  const facts = [j.size ? `${j.size} px` : "full size", `seed ${j.seed}`];
  if (j.state === "done") facts.push(fmtSeconds(j.progress.elapsed));
  const c = el("article", {class: `card state-${j.state}`, dataset: {id: j.id, state: j.state},
                           title: `submitted ${new Date(j.created * 1000).toLocaleString()}`},
               pic,
               el("div", {class: "meta"},
                  el("strong", {}, j.method),
                  el("span", {class: "badge"}, j.state),
                  el("span", {class: "muted"}, facts.join(" · "))));
  const actions = el("div", {class: "actions"});
  if (j.state === "done") {
    const show = el("button", {type: "button", class: "small show"}, "show");
    show.addEventListener("click", () => showResult(j));
    actions.append(show,
      el("a", {class: "dl-result", href: withToken(j.result_url + "?download=1"), download: ""}, "image"),
      el("a", {class: "dl-recipe", href: withToken(j.recipe_url + "?download=1"), download: ""}, "recipe"));
  }
  if (ACTIVE.has(j.state)) {
    const watchB = el("button", {type: "button", class: "small"}, "watch");
    watchB.addEventListener("click", () => watch(j.id));
    const stop = el("button", {type: "button", class: "small cancel"}, "cancel");
    stop.addEventListener("click", async () => {
      try { await api(`/api/jobs/${j.id}`, {method: "DELETE"}); } catch (e) { say(e.message, "error"); }
      refreshHistory();
    });
    actions.append(watchB, stop);
  }
  if (["interrupted", "cancelled", "failed"].includes(j.state)) {
    const again = el("button", {type: "button", class: "small rerun"}, "rerun");
    again.addEventListener("click", async () => {
      try { await api(`/api/jobs/${j.id}/rerun`, {method: "POST"}); watch(j.id); } catch (e) { say(e.message, "error"); }
      refreshHistory();
    });
    actions.append(again);
  }
  c.append(actions);
  if (j.error) c.append(el("p", {class: "error small-text"}, j.error));
  if (j.state === "done") {
    const pre = el("pre", {class: "recipe"});
    const det = el("details", {}, el("summary", {}, "recipe"), pre);
    det.addEventListener("toggle", async () => {
      if (!det.open || pre.textContent) return;
      try { pre.textContent = JSON.stringify(await api(j.recipe_url), null, 2); } catch (e) { pre.textContent = e.message; }
    });
    c.append(det);
  }
  return c;
}

init();
