// The faceanalysis web page: send photos to /v1/analyses, draw what comes back, browse stored results.
// Plain ES module, no build step, nothing loaded from elsewhere. Every string that comes from a photo
// or a server reply goes into the page through textContent, never innerHTML.

const API = "/v1/analyses";
const KEY_STORAGE = "faceanalysis.apiKey";
const PAGE_SIZE = 20;
const PARALLEL = 2;  // uploads in flight at once: enough to keep the stack busy, polite to other users
const EMOTIONS = ["angry", "disgust", "fear", "happy", "sad", "surprise", "neutral"];
// One colour per face (cycled), repeated in the table so a row is easy to find on the photo.
const PALETTE = ["#00e5ff", "#ff4081", "#ffd600", "#76ff03", "#ff9100", "#d500f9"];

const $ = (id) => document.getElementById(id);

/** Make an element with attributes and children (strings become text nodes, so they are escaped). */
function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [name, value] of Object.entries(attrs)) {
    if (value === undefined || value === null || value === false) continue;
    if (name === "text") node.textContent = value;
    else if (name.startsWith("on")) node.addEventListener(name.slice(2), value);
    else node.setAttribute(name, value === true ? "" : String(value));
  }
  for (const child of children) {
    if (child !== null && child !== undefined) node.append(child);
  }
  return node;
}

// ---- HTTP -------------------------------------------------------------------------------------

/** An API failure with the server's JSON error (code, status, message) when it sent one. */
class ApiError extends Error {
  constructor(status, code, message) {
    super(message);
    this.status = status;
    this.code = code;
  }
}

function authHeaders() {
  const key = $("api-key").value.trim();
  return key ? { Authorization: `Bearer ${key}` } : {};
}

const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

/** fetch + JSON; throws ApiError. A 503 (overloaded) is retried a few times, as Retry-After asks. */
async function api(path, options = {}) {
  for (let attempt = 0; ; attempt++) {
    let response;
    try {
      response = await fetch(path, { ...options, headers: { ...authHeaders(), ...(options.headers || {}) } });
    } catch (err) {
      throw new ApiError(0, "NETWORK", `the server could not be reached (${err.message})`);
    }
    const retryAfter = Number(response.headers.get("Retry-After"));
    if (response.status === 503 && attempt < 3 && retryAfter > 0 && retryAfter <= 10) {
      await sleep(retryAfter * 1000);
      continue;
    }
    let body = null;
    try {
      body = await response.json();
    } catch {
      // Not JSON: a proxy's HTML error page, for instance. The status line says enough.
    }
    if (response.ok && body) return body;
    const error = body && body.error ? body.error : {};
    throw new ApiError(response.status, error.code || `HTTP ${response.status}`,
                       error.message || response.statusText || "no details");
  }
}

/** A sentence for an API error, with a hint where the user can do something about it. */
function explain(err) {
  const base = err.status ? `${err.code} (HTTP ${err.status}): ${err.message}` : err.message;
  if (err.status === 401) {
    return `${base}. This server needs an API key: enter it in the "API key" field and try again.`;
  }
  if (err.status === 403) return `${base}. The API key is valid but not allowed to do this.`;
  if (err.status === 413) return `${base}. The photo is larger than the server accepts.`;
  if (err.status === 415) return `${base}. Only image files can be analyzed.`;
  return base;
}

// ---- Formatting -------------------------------------------------------------------------------

const genderName = (g) => (g && g.label ? g.label.replace(/^GENDER_/, "").toLowerCase() : "");
const pct = (p) => `${Math.round(p * 100)}%`;

/** "#1 man 34 y happy": the label drawn beside a face. */
function faceLabel(face, i) {
  const parts = [`#${i + 1}`];
  if (genderName(face.gender)) parts.push(genderName(face.gender));
  if (face.age) parts.push(`${Math.round(face.age.years)} y`);
  if (face.emotion && face.emotion.dominant) parts.push(face.emotion.dominant);
  return parts.join(" ");
}

function facesText(n) {
  return `${n} face${n === 1 ? "" : "s"}`;
}

// ---- Drawing ----------------------------------------------------------------------------------

/** Draw the photo (or a blank page when there is none) and every face onto `canvas`, at the
 *  image's own size: boxes and landmarks are in photo pixels, CSS scales the canvas down. */
function draw(canvas, result, bitmap) {
  const width = (result && result.image && result.image.width) || (bitmap && bitmap.naturalWidth) || 640;
  const height = (result && result.image && result.image.height) || (bitmap && bitmap.naturalHeight) || 480;
  canvas.width = width;
  canvas.height = height;
  const ctx = canvas.getContext("2d");
  const scale = Math.max(width, height);
  if (bitmap) {
    ctx.drawImage(bitmap, 0, 0, width, height);
  } else {
    ctx.fillStyle = "#e8eaed";
    ctx.fillRect(0, 0, width, height);
    ctx.fillStyle = "#5f6368";
    ctx.font = `${Math.max(12, Math.round(scale / 50))}px sans-serif`;
    ctx.textBaseline = "bottom";
    ctx.fillText(`no stored photo (${width} × ${height})`, 8, height - 8);
  }
  const faces = (result && result.faces) || [];
  const line = Math.max(2, Math.round(scale / 300));
  const fontSize = Math.max(14, Math.round(scale / 55));
  faces.forEach((face, i) => {
    const colour = PALETTE[i % PALETTE.length];
    const { x = 0, y = 0, width: w = 0, height: h = 0 } = face.box || {};
    ctx.strokeStyle = colour;
    ctx.lineWidth = line;
    ctx.strokeRect(x, y, w, h);
    ctx.fillStyle = colour;
    // Points sized to the face: 68 of them on a small face would otherwise merge into a blob.
    const radius = Math.min(line * 0.75, Math.max(1.5, Math.min(w, h) / 60));
    for (const p of face.landmarks || []) {
      ctx.beginPath();
      ctx.arc(p.x || 0, p.y || 0, radius, 0, 2 * Math.PI);
      ctx.fill();
    }
  });
  // Labels last, so no other face's box runs through one. Each sits on a dark strip above its box,
  // or inside the box when it touches the top edge, and is kept inside the right edge.
  ctx.font = `bold ${fontSize}px sans-serif`;
  ctx.textBaseline = "top";
  const pad = Math.round(fontSize / 4);
  const labels = faces.map(faceLabel);
  faces.forEach((face, i) => {
    const { x = 0, y = 0 } = face.box || {};
    const label = labels[i];
    const textWidth = ctx.measureText(label).width;
    const top = y - fontSize - 2 * pad >= 0 ? y - fontSize - 2 * pad : y;
    const left = Math.max(0, Math.min(x, width - textWidth - 2 * pad));
    ctx.fillStyle = "rgba(0, 0, 0, 0.7)";
    ctx.fillRect(left, top, textWidth + 2 * pad, fontSize + 2 * pad);
    ctx.fillStyle = PALETTE[i % PALETTE.length];
    ctx.fillText(label, left + pad, top + pad);
  });
  // For tests: what the canvas shows.
  canvas.dataset.drawn = String(faces.length);
  canvas.dataset.points = String(faces.reduce((sum, face) => sum + (face.landmarks || []).length, 0));
  canvas.dataset.labels = JSON.stringify(labels);
}

/** Load a local File into an <img> through an object URL; null when the browser cannot decode it. */
async function loadImage(file) {
  const url = URL.createObjectURL(file);
  const img = new Image();
  img.src = url;
  try {
    await img.decode();
    return img;
  } catch {
    return null;
  } finally {
    URL.revokeObjectURL(url);  // a decoded <img> keeps its pixels
  }
}

// ---- Result tables ----------------------------------------------------------------------------

function emotionBars(emotion) {
  const names = [...EMOTIONS, ...Object.keys(emotion.scores || {}).filter((n) => !EMOTIONS.includes(n))];
  const list = el("ul", { class: "emotions" });
  for (const name of names) {
    const score = (emotion.scores || {})[name] || 0;
    const bar = el("span", { class: "bar", "aria-hidden": "true" });
    bar.style.width = pct(score);  // CSSOM, allowed by the page's CSP (style attributes are not)
    list.append(el("li", { title: `${name} ${score.toFixed(3)}` },
                   el("span", { class: "name", text: name }),
                   el("span", { class: "track" }, bar),
                   el("span", { class: "value", text: score.toFixed(2) })));
  }
  return list;
}

function facesTable(result, caption) {
  const faces = result.faces || [];
  const head = ["#", "Box (x, y, w × h)", "Score", "Age (interval)", "Gender", "Emotion", "Emotion scores"];
  const table = el("table", { class: "faces", "data-testid": "faces-table" },
                   el("caption", { text: caption }),
                   el("thead", {}, el("tr", {}, ...head.map((h) => el("th", { scope: "col", text: h })))));
  const body = el("tbody");
  faces.forEach((face, i) => {
    const b = face.box || {};
    const colour = PALETTE[i % PALETTE.length];
    const swatch = el("span", { class: "swatch", "aria-hidden": "true" });
    swatch.style.background = colour;
    const age = face.age ? `${Math.round(face.age.years)} (${Math.round(face.age.low)}–${Math.round(face.age.high)})`
                         : "—";
    const gender = face.gender && face.gender.label
      ? `${genderName(face.gender)} ${pct(face.gender.confidence || 0)}` : "—";
    body.append(el("tr", { "data-testid": "face-row", "data-color": colour,
                           "data-box": [b.x || 0, b.y || 0, b.width || 0, b.height || 0].join(",") },
      el("th", { scope: "row" }, swatch, `${i + 1}`),
      el("td", { text: `${b.x || 0}, ${b.y || 0}, ${b.width || 0} × ${b.height || 0}` }),
      el("td", { text: (face.detection_score || 0).toFixed(2) }),
      el("td", { "data-testid": "age", text: age }),
      el("td", { "data-testid": "gender", text: gender }),
      el("td", { "data-testid": "emotion", text: (face.emotion && face.emotion.dominant) || "—" }),
      el("td", {}, face.emotion ? emotionBars(face.emotion) : "—")));
  });
  table.append(body);
  return table;
}

/** A line about the analysis itself: id, stored or not, cache hit, total server time. */
function resultMeta(result) {
  const bits = [];
  if (result.analysis_id) bits.push(`id ${result.analysis_id}`);
  bits.push(result.stored ? "stored" : "not stored");
  if (result.cached) bits.push("from cache");
  if (result.storage_error) bits.push(`storage error: ${result.storage_error}`);
  const seconds = (result.timings || []).find((t) => t.stage === "total");
  if (seconds) bits.push(`${Number(seconds.seconds).toFixed(2)} s`);
  return el("p", { class: "meta", text: bits.join(" · ") });
}

/** The figure, face count and table for one result, into `card` (an <article>). */
function showResult(card, canvas, result, bitmap, name) {
  draw(canvas, result, bitmap);
  const n = (result.faces || []).length;
  card.dataset.analysisId = result.analysis_id || "";
  canvas.setAttribute("aria-label", `${name} with ${facesText(n)} marked`);
  card.querySelector(".count").replaceChildren(
    el("span", { "data-testid": "face-count", "data-count": n, text: facesText(n) }));
  card.append(resultMeta(result));
  if (n) card.append(el("div", { class: "scroll" }, facesTable(result, `Faces in ${name}`)));
}

function showError(card, err) {
  card.dataset.state = "error";
  card.querySelector(".count").replaceChildren();
  card.append(el("p", { class: "error", role: "alert", "data-testid": "error", text: explain(err) }));
}

// ---- Uploads ----------------------------------------------------------------------------------

const progress = { total: 0, done: 0, failed: 0 };

function updateProgress() {
  const bar = $("progress-bar");
  bar.hidden = progress.total === 0;
  bar.max = progress.total || 1;
  bar.value = progress.done;
  const busy = progress.done < progress.total;
  const failed = progress.failed ? ` (${progress.failed} failed)` : "";
  $("progress-text").textContent = progress.total
    ? `${busy ? "Analyzing: " : ""}${progress.done} of ${progress.total} done${failed}` : "";
  $("progress-text").dataset.busy = String(busy);
}

/** The query string for the options chosen in the form (unset fields use the server's defaults). */
function analysisQuery() {
  const params = new URLSearchParams();
  const actions = [...document.querySelectorAll("input[name=action]:checked")].map((box) => box.value);
  if (actions.length && actions.length < 4) params.set("actions", actions.join(","));
  const threshold = $("threshold").value.trim();
  if (threshold) params.set("detection_threshold", threshold);
  const minFace = $("min-face").value.trim();
  if (minFace) params.set("min_face", minFace);
  if ($("no-store").checked) params.set("no_store", "true");
  if ($("skip-cache").checked) params.set("skip_cache", "true");
  const query = params.toString();
  return query ? `?${query}` : "";
}

const queue = [];
let workers = 0;

/** One card per photo right away (showing the photo itself), then the uploads, PARALLEL at a time. */
function addFiles(files) {
  if (progress.done === progress.total) Object.assign(progress, { total: 0, done: 0, failed: 0 });
  for (const file of files) {
    const canvas = el("canvas", { role: "img", "aria-label": `${file.name}, being analyzed`, "data-testid": "canvas" });
    const card = el("article", { class: "photo", "data-testid": "photo", "data-name": file.name,
                                 "data-state": "pending" },
                    el("h3", { text: file.name }),
                    el("p", { class: "count" }, el("span", { class: "pending", text: "analyzing…" })),
                    el("figure", {}, canvas));
    $("results").prepend(card);
    // Options are read now: changing them later affects the next photos only.
    const job = { file, card, canvas, query: analysisQuery(), image: loadImage(file) };
    // The photo shows up as soon as it is decoded, and stays (without boxes) if the analysis fails.
    job.image.then((img) => { if (img && card.dataset.state !== "done") draw(canvas, null, img); });
    queue.push(job);
    progress.total++;
  }
  updateProgress();
  while (workers < PARALLEL && queue.length) {
    workers++;
    work().finally(() => { workers--; });
  }
}

async function work() {
  while (queue.length) {
    const { file, card, canvas, query, image } = queue.shift();
    try {
      const result = await api(API + query, {
        method: "POST", body: file, headers: { "Content-Type": file.type || "application/octet-stream" },
      });
      const img = await image;
      card.dataset.state = "done";
      showResult(card, canvas, result, img, file.name);
      if (!img) card.append(el("p", { class: "hint", text: "This browser cannot show this image format." }));
    } catch (err) {
      progress.failed++;
      showError(card, err);
    }
    progress.done++;
    updateProgress();
    if (progress.done === progress.total) loadStored(true);  // new results are in the list now
  }
}

// ---- Stored analyses --------------------------------------------------------------------------

let nextToken = "";
let storedLoads = 0;  // loadStored calls so far: an answer to any but the latest is stale and dropped

function storedStatus(text, isError = false) {
  const status = $("stored-status");
  status.textContent = text;
  status.classList.toggle("error", isError);
}

/** Fetch a page of stored analyses; `fresh` starts the list again from the newest. "More" is off while a
 *  page is on its way, so one token is never asked for twice; a refresh supersedes a "More" in flight. */
async function loadStored(fresh) {
  const list = $("stored-list");
  const more = $("stored-more");
  const load = ++storedLoads;
  const params = new URLSearchParams({ page_size: String(PAGE_SIZE) });
  if (!fresh && nextToken) params.set("page_token", nextToken);
  more.disabled = true;
  try {
    const page = await api(`${API}?${params}`);
    if (load !== storedLoads) return;
    if (fresh) list.replaceChildren();
    // Pages are offsets into the newest-first list: an analysis stored since the last page pushes one
    // already shown onto this one. Skip those (one stored elsewhere shows after the next refresh).
    const shown = new Set([...list.children].map((item) => item.dataset.id));
    for (const item of page.analyses || []) {
      if (!shown.has(item.analysis_id)) list.append(storedItem(item));
    }
    nextToken = page.next_page_token || "";
    more.hidden = !nextToken;
    storedStatus(list.children.length ? "" : "No stored analyses yet.");
  } catch (err) {
    if (load === storedLoads) storedStatus(explain(err), true);
  } finally {
    if (load === storedLoads) more.disabled = false;
  }
}

function storedItem(item) {
  const id = item.analysis_id;
  const n = item.face_count || 0;
  return el("li", { "data-testid": "stored-item", "data-id": id },
    el("button", { type: "button", class: "link", "data-testid": "stored-view", title: id,
                   "aria-label": `View analysis ${id} (${facesText(n)})`, onclick: () => viewStored(id) },
       el("code", { text: id.slice(0, 12) }), ` · ${facesText(n)}`),
    el("button", { type: "button", class: "danger", "data-testid": "stored-delete",
                   "aria-label": `Delete analysis ${id}`, onclick: () => deleteStored(id) }, "Delete"));
}

async function viewStored(id) {
  const viewer = $("stored-viewer");
  viewer.replaceChildren(el("p", { class: "pending", text: "loading…" }));
  try {
    const result = await api(`${API}/${encodeURIComponent(id)}`);
    const canvas = el("canvas", { role: "img", "data-testid": "canvas" });
    const close = el("button", { type: "button", class: "close", "data-testid": "stored-close",
                                 onclick: () => viewer.replaceChildren() }, "Close");
    const card = el("article", { class: "photo", "data-testid": "stored-result", "data-id": id, "data-state": "done" },
                    el("h3", {}, "Stored analysis ", el("code", { text: id }), " ", close),
                    el("p", { class: "count" }),
                    el("figure", {}, canvas));
    viewer.replaceChildren(card);
    viewer.scrollIntoView({ block: "nearest" });
    showResult(card, canvas, result, null, `analysis ${id}`);
  } catch (err) {
    viewer.replaceChildren(el("p", { class: "error", role: "alert", "data-testid": "error", text: explain(err) }));
  }
}

async function deleteStored(id) {
  if (!window.confirm(`Delete stored analysis ${id}?`)) return;
  try {
    await api(`${API}/${encodeURIComponent(id)}`, { method: "DELETE" });
    const shown = $("stored-viewer").querySelector("[data-id]");
    if (shown && shown.dataset.id === id) $("stored-viewer").replaceChildren();
    await loadStored(true);
  } catch (err) {
    storedStatus(explain(err), true);
  }
}

// ---- Wiring -----------------------------------------------------------------------------------

function init() {
  const key = $("api-key");
  key.value = localStorage.getItem(KEY_STORAGE) || "";
  key.addEventListener("change", () => {
    localStorage.setItem(KEY_STORAGE, key.value.trim());
    loadStored(true);
  });

  const input = $("files");
  input.addEventListener("change", () => {
    addFiles([...input.files]);
    input.value = "";  // choosing the same photo again is a new upload
  });

  // The whole page is a drop target, so a near miss does not make the browser open the photo instead.
  const zone = $("drop-zone");
  document.addEventListener("dragover", (event) => {
    event.preventDefault();
    zone.classList.add("over");
  });
  document.addEventListener("dragleave", (event) => {
    if (!event.relatedTarget) zone.classList.remove("over");
  });
  document.addEventListener("drop", (event) => {
    event.preventDefault();
    zone.classList.remove("over");
    // Everything dropped is sent: the server says clearly (415) what it will not take.
    const files = [...(event.dataTransfer ? event.dataTransfer.files : [])];
    if (files.length) addFiles(files);
  });

  $("options").addEventListener("submit", (event) => event.preventDefault());
  $("stored-refresh").addEventListener("click", () => loadStored(true));
  $("stored-more").addEventListener("click", () => loadStored(false));
  loadStored(true);
}

init();
