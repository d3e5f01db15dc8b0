// imgsync console: plain JavaScript, no build step, no dependency. Text from the server is always set
// with textContent (never parsed as HTML); URLs of pictures come ready-made from the server.
"use strict";

function el(tag, attrs, children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs || {})) {
    if (key === "text") node.textContent = value;
    else if (key === "class") node.className = value;
    else node.setAttribute(key, value);
  }
  for (const child of children || []) node.appendChild(child);
  return node;
}

async function call(method, url, body, contentType) {
  const options = {method, headers: {}, credentials: "same-origin"};
  if (body !== undefined) {
    if (contentType) {
      options.body = body;
      options.headers["Content-Type"] = contentType;
    } else {
      options.body = JSON.stringify(body);
      options.headers["Content-Type"] = "application/json";
    }
  }
  const response = await fetch(url, options);
  let data = null;
  try { data = await response.json(); } catch (e) { data = {error: `${response.status} ${response.statusText}`}; }
  if (!response.ok) {
    const error = new Error((data && data.error) || `${response.status} ${response.statusText}`);
    error.status = response.status;
    throw error;
  }
  return data;
}

// A picture that cannot be had (refused, gone) shows as "no preview", like one that does not decode.
document.addEventListener("error", (event) => {
  const img = event.target;
  if (img instanceof HTMLImageElement && !img.dataset.failed) {
    img.dataset.failed = "1";
    img.src = "/static/nopreview.svg";
  }
}, true);

// --------------------------------------------------------------------------- mirrors

function initMirrors() {
  for (const button of document.querySelectorAll("button.sync-now")) {
    button.addEventListener("click", () => startSync(button.closest("article.mirror")));
  }
  for (const box of document.querySelectorAll(".job[data-job]")) {
    if (box.dataset.job) followJob(box.closest("article.mirror"), box.dataset.job);
  }
  if (document.getElementById("daemon").dataset.running === "yes") {
    setInterval(refreshStatus, 3000);
  }
}

async function startSync(card) {
  const button = card.querySelector("button.sync-now");
  const box = card.querySelector(".job");
  button.disabled = true;
  box.hidden = false;
  box.dataset.state = "running";
  box.querySelector(".phase").textContent = "starting";
  box.querySelector(".job-message").textContent = "";
  box.querySelector(".job-lines").textContent = "";
  try {
    const job = await call("POST", "/api/sync", {mirror: card.dataset.mirror});
    showJob(card, job);
    if (job.state === "running") followJob(card, job.id);
    else if (job.state === "asked") followDaemon(card);
    else button.disabled = false;
  } catch (error) {
    box.dataset.state = "refused";
    box.querySelector(".job-message").textContent = error.message;
    button.disabled = false;
  }
}

function followJob(card, id) {
  const button = card.querySelector("button.sync-now");
  button.disabled = true;
  const tick = async () => {
    let job;
    try {
      job = await call("GET", `/api/jobs?id=${encodeURIComponent(id)}`);
    } catch (error) {
      card.querySelector(".job-message").textContent = error.message;
      button.disabled = false;
      return;
    }
    showJob(card, job);
    if (job.state === "running") {
      setTimeout(tick, 500);
    } else {
      button.disabled = false;
      refreshStatus();
    }
  };
  tick();
}

function followDaemon(card) {
  const button = card.querySelector("button.sync-now");
  let left = 20;
  const tick = async () => {
    await refreshStatus();
    if (--left > 0) setTimeout(tick, 1500);
    else button.disabled = false;
  };
  setTimeout(tick, 1000);
}

function showJob(card, job) {
  const box = card.querySelector(".job");
  box.hidden = false;
  box.dataset.state = job.state;
  box.dataset.job = job.id;
  const bar = box.querySelector("progress");
  if (job.total > 0) {
    bar.max = job.total;
    bar.value = job.done;
  } else if (job.state === "running") {
    bar.removeAttribute("value");  // indeterminate while scanning
  } else {
    bar.max = 1;
    bar.value = 1;
  }
  box.querySelector(".phase").textContent = job.phase || "";
  box.querySelector(".job-message").textContent = job.message || "";
  box.querySelector(".job-lines").textContent = (job.lines || []).join("\n");
}

async function refreshStatus() {
  let status;
  try { status = await call("GET", "/api/status"); } catch (error) { return; }
  for (const m of status.mirrors) {
    const card = document.querySelector(`article.mirror[data-mirror="${CSS.escape(m.name)}"]`);
    if (!card) continue;
    for (const [key, value] of Object.entries(m.counts)) {
      const cell = card.querySelector(`[data-count="${key}"]`);
      if (cell) cell.textContent = value;
    }
    const last = card.querySelector('[data-field="last_run"]');
    if (m.last_run) {
      last.textContent = `Last run: ${m.last_run.status} at ${m.last_run.when}` + (m.last_run.error ? `: ${m.last_run.error}` : "");
    }
    const watch = card.querySelector('[data-field="daemon"]');
    watch.textContent = m.daemon ? `Watch: ${m.daemon.state}, ${m.daemon.queue} queued` + (m.daemon.note ? `; ${m.daemon.note}` : "")
      + (m.daemon.last ? `; last: ${m.daemon.last}` : "") : "";
  }
  const lines = document.getElementById("daemon-lines");
  lines.replaceChildren(...status.daemon_lines.map((line) => el("li", {text: line})));
}

// --------------------------------------------------------------------------- search

function initSearch() {
  const form = document.getElementById("search-form");
  const drop = document.getElementById("drop");
  const fileInput = document.getElementById("query-file");
  const urlInput = document.getElementById("query-url");
  const scope = document.getElementById("scope");
  const tags = document.getElementById("tags");
  const tagLibraries = form.dataset.tagLibraries.split(",");
  let query = null;

  const setQuery = (blob) => {
    if (!blob) return;
    query = blob;
    urlInput.value = "";
    const preview = document.getElementById("query-preview");
    if (preview.src.startsWith("blob:")) URL.revokeObjectURL(preview.src);
    preview.src = URL.createObjectURL(blob);
    preview.hidden = false;
    // only the status text: the hint also holds the file chooser, which must stay for the next query
    document.getElementById("drop-status").textContent = `${blob.name || "pasted image"} (${Math.round(blob.size / 1024)} KB). To replace it: drop, paste or`;
  };
  const libraryOf = () => {
    const option = scope.selectedOptions[0];
    const label = option.textContent;
    if (scope.value.startsWith("library:")) return scope.value.slice(8);
    const match = /\(([a-z_]+)\)$/.exec(label);
    return match ? match[1] : "";
  };
  const syncTags = () => { tags.disabled = !tagLibraries.includes(libraryOf()); };
  scope.addEventListener("change", syncTags);
  syncTags();

  drop.addEventListener("dragover", (event) => { event.preventDefault(); drop.classList.add("over"); });
  drop.addEventListener("dragleave", () => drop.classList.remove("over"));
  drop.addEventListener("drop", (event) => {
    event.preventDefault();
    drop.classList.remove("over");
    setQuery(event.dataTransfer.files[0]);
  });
  document.addEventListener("paste", (event) => {
    for (const item of event.clipboardData.items) {
      if (item.type.startsWith("image/")) {
        setQuery(item.getAsFile());
        event.preventDefault();
        return;
      }
    }
  });
  fileInput.addEventListener("change", () => setQuery(fileInput.files[0]));
  urlInput.addEventListener("input", () => { if (urlInput.value) query = null; });

  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    const status = document.getElementById("search-status");
    const hits = document.getElementById("hits");
    const params = new URLSearchParams({in: scope.value, top: document.getElementById("top").value || "10"});
    if (!tags.disabled && tags.value.trim()) params.set("tags", tags.value.trim());
    const url = `/api/search?${params}`;
    let request;
    if (urlInput.value.trim()) request = call("POST", url, {url: urlInput.value.trim()});
    else if (query) request = call("POST", url, query, query.type || "application/octet-stream");
    else {
      status.textContent = "Drop, paste or choose an image first, or give its URL.";
      status.className = "status bad";
      return;
    }
    status.textContent = "Searching…";
    status.className = "status";
    const button = document.getElementById("search-button");
    button.disabled = true;
    hits.replaceChildren();
    try {
      const answer = await request;
      status.textContent = answer.hits.length ? `${answer.hits.length} result(s) in ${answer.library}, best first.` : `No match in ${answer.library}.`;
      hits.replaceChildren(...answer.hits.map(renderHit));
    } catch (error) {
      status.textContent = error.message;
      status.className = "status bad";
    } finally {
      button.disabled = false;
    }
  });
}

function renderHit(hit) {
  const children = [];
  children.push(hit.thumb ? el("img", {src: hit.thumb, alt: "", loading: "lazy"}) : el("div", {class: "no-file", text: "no local file"}));
  children.push(el("p", {}, [el("span", {class: "score", text: hit.score.toFixed(4)}), document.createTextNode(" score")]));
  children.push(el("p", {class: "brief"}, [el("code", {text: hit.brief})]));
  for (const path of hit.paths) children.push(el("p", {class: "path"}, [el("code", {text: path})]));
  if (!hit.paths.length) children.push(el("p", {class: "note", text: "an entry no mirror here added"}));
  return el("li", {class: "hit", "data-cont-sign": hit.cont_sign}, children);
}

// --------------------------------------------------------------------------- gallery

function initGallery() {
  for (const item of document.querySelectorAll("li.entry")) {
    const form = item.querySelector("form.edit-form");
    if (!form) continue;
    const status = item.querySelector(".entry-status");
    const say = (text, bad) => { status.textContent = text; status.className = bad ? "entry-status bad" : "entry-status"; };
    const key = {library: item.dataset.library, cont_sign: item.dataset.contSign};
    item.querySelector("button.edit").addEventListener("click", () => { form.hidden = false; });
    form.querySelector("button.cancel").addEventListener("click", () => { form.hidden = true; });
    form.addEventListener("submit", async (event) => {
      event.preventDefault();
      const change = {...key, brief: form.elements.brief.value};
      if (form.elements.tags) change.tags = form.elements.tags.value;
      if (!confirm(`Change entry ${key.cont_sign} in the gallery?\n\nbrief: ${change.brief}` + (change.tags !== undefined ? `\ntags: ${change.tags || "(none)"}` : ""))) return;
      try {
        await call("POST", "/api/entry/edit", change);
        item.querySelector(".brief code").textContent = change.brief;
        const shownTags = item.querySelector(".tags");
        if (shownTags && change.tags !== undefined) shownTags.textContent = change.tags || "—";
        form.hidden = true;
        say("Saved.");
      } catch (error) {
        say(error.message, true);
      }
    });
    item.querySelector("button.delete").addEventListener("click", async () => {
      if (!confirm(`Delete entry ${key.cont_sign} from the gallery? This cannot be undone.`)) return;
      try {
        await call("POST", "/api/entry/delete", key);
        item.classList.add("deleted");
        item.querySelector(".actions").remove();
        say("Deleted from the gallery.");
      } catch (error) {
        say(error.message, true);
      }
    });
  }
}

document.addEventListener("DOMContentLoaded", () => {
  const pageName = document.body.dataset.page;
  if (pageName === "mirrors") initMirrors();
  else if (pageName === "search") initSearch();
  else if (pageName === "gallery") initGallery();
});
