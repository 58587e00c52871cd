// The pixgrep gallery: search as you type, thumbnails, the matched lines outlined on the image.
// Text from images is untrusted: it only ever goes into textContent, never into HTML.
"use strict";

const $ = (id) => document.getElementById(id);
const state = { results: [], sel: -1, open: -1, seq: 0, query: "", like: null };
const DEBOUNCE_MS = 180;

function el(tag, attrs, ...children) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (k === "class") e.className = v;
    else if (k.startsWith("on")) e.addEventListener(k.slice(2), v);
    else e.setAttribute(k, v);
  }
  for (const c of children) if (c !== null && c !== undefined) e.append(c);
  return e;
}

function highlighted(text, spans) {
  // spans are [start, end) offsets into text (code points, as Python counts them)
  const chars = Array.from(text || "");
  const frag = document.createDocumentFragment();
  let last = 0;
  for (const [s, e] of spans || []) {
    if (s > last) frag.append(chars.slice(last, s).join(""));
    frag.append(el("mark", {}, chars.slice(s, e).join("")));
    last = e;
  }
  if (last < chars.length) frag.append(chars.slice(last).join(""));
  return frag;
}

function filterParams() {
  const p = new URLSearchParams();
  const folder = $("f-folder").value.trim();
  if (folder) p.set("folder", folder);
  if ($("f-since").value) p.set("since", $("f-since").value);
  if ($("f-until").value) p.set("until", $("f-until").value);
  if ($("f-source").value) p.set("source", $("f-source").value);
  if ($("f-all").checked) p.set("all", "1");
  return p;
}

async function getJSON(url) {
  const r = await fetch(url, { credentials: "same-origin" });
  const body = await r.json().catch(() => ({ error: r.statusText }));
  if (!r.ok) throw new Error(body.error || r.statusText);
  return body;
}

function explainText(r) {
  const lines = [];
  if (r.keyword_score !== null && r.keyword_score !== undefined) {
    lines.push(`keyword: bm25 ${r.keyword_score.toFixed(3)} (rank ${r.keyword_rank}), covers ${Math.round((r.coverage || 0) * 100)}% of the query\n  “${r.keyword_text}”`);
  } else lines.push("keyword: no match");
  if (r.dense_score !== null && r.dense_score !== undefined) {
    lines.push(`dense: cosine ${r.dense_score.toFixed(3)} (rank ${r.dense_rank})\n  “${r.dense_text}”`);
  } else lines.push("dense: no match");
  lines.push(`fused ${r.score.toFixed(4)}, relevance ${(r.relevance || 0).toFixed(3)}`);
  return lines.join("\n");
}

function card(r, i) {
  const why = el("pre", { class: "why" }, explainText(r));
  why.hidden = !$("f-why").checked;
  const c = el("div", { class: "card", role: "option", "data-i": String(i), "data-hash": r.content_hash },
    el("div", { class: "thumb", onclick: () => openViewer(i) },
      el("img", { src: `/thumb/${r.content_hash}`, alt: r.name, loading: "lazy", title: r.path })),
    el("div", { class: "meta" },
      el("div", { class: "snippet" }, highlighted(r.snippet, r.spans)),
      el("div", { class: "tags" },
        el("span", { class: "tag source" }, r.source),
        el("span", { class: "tag" }, r.score.toFixed(3)),
        r.other_paths && r.other_paths.length ? el("span", { class: "tag" }, `+${r.other_paths.length} copies`) : null),
      el("div", { class: "folder", title: r.folder }, r.folder),
      el("div", { class: "actions" },
        el("button", { type: "button", onclick: () => copyPath(r.path) }, "copy path"),
        el("button", { type: "button", class: "like", onclick: () => moreLike(r) }, "more like this")),
      why));
  c.addEventListener("click", () => select(i));
  return c;
}

function render(summary) {
  const grid = $("grid");
  grid.replaceChildren(...state.results.map(card));
  $("summary").textContent = summary;
  state.sel = state.results.length ? 0 : -1;
  markSel();
}

function markSel() {
  document.querySelectorAll(".card.sel").forEach((c) => c.classList.remove("sel"));
  const c = document.querySelector(`.card[data-i="${state.sel}"]`);
  if (c) { c.classList.add("sel"); c.scrollIntoView({ block: "nearest" }); }
}

function select(i) { state.sel = i; markSel(); }

async function runSearch() {
  const q = $("q").value.trim();
  state.query = q;
  state.like = null;
  const url = new URL(location.href);
  url.searchParams.delete("token");  // the cookie holds it now; keep it out of history
  if (q) url.searchParams.set("q", q); else url.searchParams.delete("q");
  history.replaceState(null, "", url);
  const seq = ++state.seq;
  if (!q) { state.results = []; render(""); return; }
  const p = filterParams();
  p.set("q", q);
  try {
    const t0 = performance.now();
    const body = await getJSON(`/api/search?${p}`);
    if (seq !== state.seq) return;  // a newer keystroke won
    state.results = body.results;
    const ms = Math.round(performance.now() - t0);
    render(body.results.length ? `${body.results.length} result${body.results.length === 1 ? "" : "s"} (${ms} ms)`
      : "no good match" + ($("f-all").checked ? "" : " (tick “below the relevance floor too” to see everything)"));
  } catch (e) {
    if (seq === state.seq) { state.results = []; render(`error: ${e.message}`); }
  }
}

async function moreLike(r) {
  const seq = ++state.seq;
  const p = filterParams();
  try {
    const body = await getJSON(`/api/similar/${r.content_hash}?${p}`);
    if (seq !== state.seq) return;
    closeViewer();
    state.results = body.results;
    state.like = r.content_hash;
    render(`${body.results.length} images with text like ${r.name}`);
  } catch (e) { $("summary").textContent = `error: ${e.message}`; }
}

async function copyPath(path) {
  try {
    await navigator.clipboard.writeText(path);
    $("summary").textContent = `copied ${path}`;
  } catch (e) {
    // No clipboard permission (plain http on some browsers): select the text for Ctrl+C instead.
    const t = el("textarea", {}, path);
    document.body.append(t); t.select();
    const ok = document.execCommand && document.execCommand("copy");
    t.remove();
    $("summary").textContent = ok ? `copied ${path}` : path;
  }
}

async function openViewer(i) {
  const r = state.results[i];
  if (!r) return;
  state.open = i; state.sel = i; markSel();
  $("viewer").hidden = false;
  $("full").src = `/image/${r.content_hash}`;
  $("full").alt = r.name;
  $("v-path").textContent = r.path;
  $("v-text").replaceChildren(highlighted(r.snippet, r.spans));
  $("v-why").textContent = explainText(r);
  $("v-why").hidden = !$("f-why").checked;
  $("v-copy").onclick = () => copyPath(r.path);
  $("v-like").onclick = () => moreLike(r);
  const svg = $("boxes");
  svg.replaceChildren();
  try {
    const q = state.like ? "" : state.query;
    const it = await getJSON(`/api/item/${r.content_hash}?q=${encodeURIComponent(q)}`);
    if (state.open !== i) return;
    svg.setAttribute("viewBox", `0 0 ${it.width || 1} ${it.height || 1}`);
    for (const k of it.matched) {
      const b = it.lines[k] && it.lines[k].box;
      if (!b) continue;
      const rect = document.createElementNS("http://www.w3.org/2000/svg", "rect");
      rect.setAttribute("x", b[0]); rect.setAttribute("y", b[1]);
      rect.setAttribute("width", b[2] - b[0]); rect.setAttribute("height", b[3] - b[1]);
      rect.setAttribute("class", "match");
      const title = document.createElementNS("http://www.w3.org/2000/svg", "title");
      title.textContent = it.lines[k].text;
      rect.append(title);
      svg.append(rect);
    }
  } catch (e) { $("v-text").textContent = `error: ${e.message}`; }
}

function closeViewer() { $("viewer").hidden = true; state.open = -1; $("full").removeAttribute("src"); }

function columns() {
  const cards = document.querySelectorAll(".card");
  if (cards.length < 2) return 1;
  const top = cards[0].offsetTop;
  let n = 0;
  for (const c of cards) { if (c.offsetTop !== top) break; n++; }
  return Math.max(1, n);
}

function onKey(ev) {
  const inField = ["INPUT", "SELECT", "TEXTAREA"].includes(document.activeElement.tagName);
  const viewing = !$("viewer").hidden;
  if (ev.key === "Escape") {
    if (viewing) closeViewer();
    else if (!$("status").hidden) $("status").hidden = true;
    else if (inField) document.activeElement.blur();
    ev.preventDefault();
    return;
  }
  const n = state.results.length;
  if (!n) return;
  if (viewing) {
    if (ev.key === "ArrowRight") { openViewer(Math.min(n - 1, state.open + 1)); ev.preventDefault(); }
    if (ev.key === "ArrowLeft") { openViewer(Math.max(0, state.open - 1)); ev.preventDefault(); }
    return;
  }
  if (ev.key === "Enter") {
    if (inField && document.activeElement.id === "q") { clearTimeout(timer); runSearch(); ev.preventDefault(); return; }
    if (!inField && state.sel >= 0) { openViewer(state.sel); ev.preventDefault(); }
    return;
  }
  const moves = { ArrowRight: 1, ArrowLeft: -1, ArrowDown: columns(), ArrowUp: -columns() };
  if (ev.key in moves && !(inField && (ev.key === "ArrowLeft" || ev.key === "ArrowRight"))) {
    if (inField) document.activeElement.blur();
    select(Math.max(0, Math.min(n - 1, state.sel + moves[ev.key])));
    ev.preventDefault();
  }
}

async function showStatus() {
  const body = $("status-body");
  body.replaceChildren("loading…");
  $("status").hidden = false;
  try {
    const s = await getJSON("/api/status");
    const d = s.daemon || {};
    const q = d.queue || {};
    const c = s.counts || {};
    const rate = d.images_per_second;
    body.replaceChildren(
      el("p", {}, `${c.indexed || 0} images indexed (${c.paths || 0} paths), ${c.failed || 0} failed`),
      el("p", {}, `queue: ${(q.pending || 0) + (q.processing || 0)} waiting, ${d.waiting_to_settle || 0} settling; ` +
        `${rate === null || rate === undefined ? "idle" : rate.toFixed(2) + " images/s"}`),
      el("h3", {}, "watched folders"),
      el("ul", {}, ...(s.watched || []).map((w) => el("li", {}, w))),
      el("h3", {}, `failures (${(s.failures || []).length})`),
      el("ul", {}, ...(s.failures || []).map((f) =>
        el("li", {}, f.path, el("br"), el("span", { class: "err" }, `${f.error} (attempts ${f.attempts})`)))),
    );
  } catch (e) { body.replaceChildren(el("p", { class: "err" }, e.message)); }
}

let timer = 0;
function schedule() { clearTimeout(timer); timer = setTimeout(runSearch, DEBOUNCE_MS); }

function init() {
  $("bar").addEventListener("submit", (ev) => { ev.preventDefault(); clearTimeout(timer); runSearch(); });
  $("q").addEventListener("input", schedule);
  for (const id of ["f-folder", "f-since", "f-until", "f-source", "f-all"]) $(id).addEventListener("change", schedule);
  $("f-why").addEventListener("change", () => {
    document.querySelectorAll(".card .why").forEach((w) => { w.hidden = !$("f-why").checked; });
    $("v-why").hidden = !$("f-why").checked;
  });
  $("status-btn").addEventListener("click", showStatus);
  $("status-close").addEventListener("click", () => { $("status").hidden = true; });
  $("v-close").addEventListener("click", closeViewer);
  $("viewer").addEventListener("click", (ev) => { if (ev.target === $("viewer")) closeViewer(); });
  document.addEventListener("keydown", onKey);
  const q = new URLSearchParams(location.search).get("q");
  if (q) { $("q").value = q; runSearch(); }
  else {
    const url = new URL(location.href);
    url.searchParams.delete("token");
    history.replaceState(null, "", url);
  }
}

document.addEventListener("DOMContentLoaded", init);
