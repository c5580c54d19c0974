// The troca page: lists the hub's files by folder, uploads (button or drag and drop, with a
// progress bar per file), downloads, deletes, and shows the hub's status, clients and history.
// Every name goes onto the page with textContent, never as HTML.
"use strict";

const $ = (sel) => document.querySelector(sel);
let folder = "";
let files = [];
let token = sessionStorage.getItem("troca-token") || "";

function el(tag, props, ...children) {
  const e = document.createElement(tag);
  Object.assign(e, props || {});
  for (const c of children) e.append(c);
  return e;
}

function encodePath(name) {
  return name.split("/").map(encodeURIComponent).join("/");
}

function size(n) {
  const units = ["B", "KiB", "MiB", "GiB", "TiB"];
  let i = 0;
  while (n >= 1024 && i < units.length - 1) { n /= 1024; i++; }
  return i === 0 ? `${n} B` : `${n.toFixed(1)} ${units[i]}`;
}

function when(iso) {
  const d = new Date(iso);
  return isNaN(d) ? "" : d.toLocaleString();
}

function say(text) {
  $("#message").textContent = text || "";
}

function askToken(why) {
  const t = window.prompt(`${why}\nAccess token (kept in this tab only):`, token);
  if (t === null) return false;
  token = t.trim();
  sessionStorage.setItem("troca-token", token);
  return true;
}

// This browser's owner key for the hub: what it uploads, it may replace and delete again
// without a token. Random, kept in this browser only; the hub stores only its hash.
function ownerKey() {
  try {
    let k = localStorage.getItem("troca-owner");
    if (!k) {
      const b = new Uint8Array(32);
      crypto.getRandomValues(b);
      k = Array.from(b, (x) => x.toString(16).padStart(2, "0")).join("");
      localStorage.setItem("troca-owner", k);
    }
    return k;
  } catch (_) {
    return null; // storage refused: uploads belong to nobody, as without a key
  }
}

function headers() {
  const h = {};
  const k = ownerKey();
  if (k) h["X-Troca-Owner"] = k;
  if (token) h.Authorization = `Bearer ${token}`;
  return h;
}

// fetch with the token; asks for a token once when the hub wants one.
async function api(path, opts = {}) {
  for (let attempt = 0; ; attempt++) {
    const r = await fetch(path, { ...opts, headers: { ...headers(), ...(opts.headers || {}) } });
    if ((r.status === 401 || r.status === 403) && attempt === 0) {
      const body = await r.clone().json().catch(() => ({}));
      if (askToken(body.message || "This needs a token.")) continue;
    }
    return r;
  }
}

async function errorText(r) {
  const body = await r.json().catch(() => null);
  return body && body.message ? body.message : `${r.status} ${r.statusText}`;
}

function route() {
  const h = decodeURIComponent(location.hash.replace(/^#\/?/, ""));
  folder = h && !h.endsWith("/") ? h + "/" : h;
}

async function loadFiles() {
  const r = await api(`/api/files?prefix=${encodeURIComponent(folder)}`);
  if (!r.ok) { say(await errorText(r)); return; }
  files = await r.json();
  render();
}

function render() {
  // Breadcrumbs.
  const crumbs = $("#crumbs");
  crumbs.replaceChildren(el("a", { href: "#/", textContent: "home" }));
  let acc = "";
  for (const part of folder.split("/").filter(Boolean)) {
    acc += part + "/";
    crumbs.append(" / ", el("a", { href: "#/" + acc, textContent: part }));
  }
  // Folders and files directly in this folder.
  const filter = $("#filter").value.trim().toLowerCase();
  const subfolders = new Map();
  const here = [];
  for (const f of files) {
    if (!f.name.startsWith(folder)) continue;
    const rest = f.name.slice(folder.length);
    const slash = rest.indexOf("/");
    if (slash >= 0) {
      const sub = rest.slice(0, slash);
      const s = subfolders.get(sub) || { count: 0, size: 0 };
      s.count++; s.size += f.size;
      subfolders.set(sub, s);
    } else {
      here.push({ ...f, short: rest });
    }
  }
  const rows = [];
  for (const [sub, s] of [...subfolders].sort()) {
    if (filter && !sub.toLowerCase().includes(filter)) continue;
    rows.push(el("tr", {},
      el("td", { className: "name folder" },
        el("a", { href: "#/" + folder + sub + "/", textContent: sub + "/" })),
      el("td", { className: "num", textContent: size(s.size) }),
      el("td", { className: "when", textContent: `${s.count} files` }),
      el("td")));
  }
  for (const f of here.sort((a, b) => a.short.localeCompare(b.short))) {
    if (filter && !f.short.toLowerCase().includes(filter)) continue;
    const link = el("a", { href: `/files/${encodePath(f.name)}?download=1`, textContent: f.short });
    link.setAttribute("download", f.short);
    link.addEventListener("click", (ev) => {
      if (!token) return; // a plain link works without a token
      ev.preventDefault();
      download(f);
    });
    const del = el("button", { type: "button", className: "danger", textContent: "Delete" });
    del.setAttribute("aria-label", `Delete ${f.short}`);
    del.addEventListener("click", () => remove(f.name));
    rows.push(el("tr", {},
      el("td", { className: "name" }, link),
      el("td", { className: "num", textContent: size(f.size) }),
      el("td", { className: "when", textContent: when(f.modified) }),
      el("td", {}, del)));
  }
  if (rows.length === 0) {
    rows.push(el("tr", {}, el("td", { colSpan: 4, textContent: filter ? "Nothing matches." : "No files here yet." })));
  }
  $("#files tbody").replaceChildren(...rows);
}

// With a token, a download goes through fetch so the token travels in a header.
async function download(f) {
  const r = await api(`/files/${encodePath(f.name)}`);
  if (!r.ok) { say(await errorText(r)); return; }
  const url = URL.createObjectURL(await r.blob());
  const a = el("a", { href: url });
  a.download = f.short;
  document.body.append(a);
  a.click();
  a.remove();
  setTimeout(() => URL.revokeObjectURL(url), 10000);
}

async function remove(name) {
  if (!window.confirm(`Delete ${name}?`)) return;
  const r = await api(`/files/${encodePath(name)}`, { method: "DELETE" });
  if (!r.ok) { say(`Cannot delete ${name}: ${await errorText(r)}`); return; }
  say("");
  await loadFiles();
  refreshSide();
}

// One upload with its own progress bar; asks before replacing a file.
function upload(file, overwrite = false) {
  const name = folder + file.name;
  const bar = el("progress", { max: file.size || 1, value: 0 });
  const label = el("span", { textContent: name });
  const item = el("li", {}, label, bar);
  $("#uploads").append(item);
  return new Promise((resolve) => {
    const xhr = new XMLHttpRequest();
    xhr.open("PUT", `/files/${encodePath(name)}${overwrite ? "?overwrite=1" : ""}`);
    for (const [k, v] of Object.entries(headers())) xhr.setRequestHeader(k, v);
    xhr.upload.addEventListener("progress", (e) => { bar.value = e.loaded; });
    xhr.addEventListener("load", async () => {
      item.remove();
      let body = {};
      try { body = JSON.parse(xhr.responseText); } catch (_) { /* not JSON */ }
      if (xhr.status === 201) {
        say("");
      } else if (xhr.status === 409 && !overwrite && body.error === "already_exists") {
        if (window.confirm(`${name} already exists. Replace it?`)) await upload(file, true);
      } else if ((xhr.status === 401 || xhr.status === 403) && askToken(body.message || "Uploading needs a token.")) {
        await upload(file, overwrite);
      } else {
        say(`Cannot upload ${name}: ${body.message || xhr.status}`);
      }
      resolve();
    });
    xhr.addEventListener("error", () => { item.remove(); say(`Cannot upload ${name}: connection lost`); resolve(); });
    xhr.send(file);
  });
}

async function uploadAll(list) {
  for (const f of list) await upload(f);
  await loadFiles();
  refreshSide();
}

async function refreshSide() {
  const [s, c, h] = await Promise.all([
    api("/api/status"), api("/api/clients"), api("/api/history?limit=15"),
  ]);
  if (s.ok) {
    const st = await s.json();
    const up = st.uptime_s;
    const uptime = up >= 86400 ? `${Math.floor(up / 86400)}d` : up >= 3600 ? `${Math.floor(up / 3600)}h` : `${Math.floor(up / 60)}m`;
    $("#status").textContent =
      `hub time ${st.time.replace(/\.\d+/, "")} (${st.time_zone}) · up ${uptime} · ${st.files} files, ${size(st.bytes)} · ${st.clients} connected`;
  }
  if (c.ok) {
    $("#clients").replaceChildren(...(await c.json()).map((x) =>
      el("li", { textContent: `${x.name} — ${x.address} — ${x.activity}${x.target ? " " + x.target : ""}` })));
  }
  if (h.ok) {
    $("#history").replaceChildren(...(await h.json()).map((x) =>
      el("li", {
        className: x.ok ? "" : "failed",
        textContent: `${new Date(x.time).toLocaleTimeString()} ${x.client} ${x.op} ${x.target}${x.ok ? "" : " — " + x.error}`,
      })));
  }
}

function setup() {
  route();
  window.addEventListener("hashchange", () => { route(); loadFiles(); });
  $("#filter").addEventListener("input", render);
  $("#upload").addEventListener("change", (e) => { uploadAll([...e.target.files]); e.target.value = ""; });
  $("#token-button").addEventListener("click", () => { askToken("Set the token to use (empty for none)."); loadFiles(); });
  const drop = $("#drop");
  for (const ev of ["dragenter", "dragover"]) {
    document.addEventListener(ev, (e) => { e.preventDefault(); drop.classList.add("over"); });
  }
  for (const ev of ["dragleave", "drop"]) {
    document.addEventListener(ev, (e) => { e.preventDefault(); drop.classList.remove("over"); });
  }
  document.addEventListener("drop", (e) => {
    if (e.dataTransfer && e.dataTransfer.files.length) uploadAll([...e.dataTransfer.files]);
  });
  loadFiles();
  refreshSide();
  // Every look is a request in the hub's history: poll gently, and only while someone looks.
  setInterval(() => { if (document.visibilityState === "visible") refreshSide(); }, 10000);
}

setup();
