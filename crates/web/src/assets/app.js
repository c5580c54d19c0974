// The troca page. The hub sends each folder's listing as plain HTML (it works without this
// script); this script adds what needs one: uploads of files and folders (button or drag and
// drop, a progress bar each), new folders, rename/move, delete (only where this visitor may),
// search across every folder, share links, a token dialog, and the hub's status, clients and
// activity. Opened through a share link, it shows what the link shares and nothing else;
// through an upload link, only a place to send files and what this page sent.
// Every name goes onto the page with textContent, or in the hub's page (which escapes it),
// never as HTML made here.
"use strict";

const $ = (sel) => document.querySelector(sel);
const folder = document.body.dataset.folder || "";
const base = document.body.dataset.base || "";   // the path the hub is served beneath
// Opened through a share link: its path carries the only token, for reading.
const shared = document.body.dataset.share === "1";
// A token (an upload link's) that sends files into this folder and sees nothing.
const uploadOnly = document.body.dataset.upload === "1";
let shownRows = [];      // this folder's rows, as the hub's page sends them
let rights = { role: "anonymous", folder: null, may_upload: false, may_change_all: false };
let token = shared ? "" : sessionStorage.getItem("troca-token") || "";
let lastSeen = null;     // when the hub last answered

function el(tag, props, ...children) {
  const e = document.createElement(tag);
  Object.assign(e, props || {});
  for (const c of children) e.append(c);
  return e;
}

function href(name) {
  return base + "/files/" + name.split("/").map(encodeURIComponent).join("/");
}

function size(n) {
  const units = ["B", "KiB", "MiB", "GiB", "TiB"];
  let i = 0;
  while (n >= 1024 && i < units.length - 1) { n /= 1024; i++; }
  return i === 0 ? `${n} B` : `${n.toFixed(1)} ${units[i]}`;
}

function when(iso) {
  const d = new Date(iso);
  if (isNaN(d)) return "";
  const today = new Date().toDateString() === d.toDateString();
  return today ? d.toLocaleTimeString([], { hour: "2-digit", minute: "2-digit" })
    : d.toLocaleDateString([], { year: "numeric", month: "short", day: "numeric" });
}

function plural(n, one, many) { return `${n} ${n === 1 ? one : many}`; }

function say(text) { $("#message").textContent = text || ""; }

// ---- Dialogs: one <dialog> for questions, names and tokens.

// A dialog: a question (resolves true or null), or one field (its text or null), or with
// `extra` ({ label, value, placeholder }) two fields (both texts as an array, or null). An
// `image` (a URL) is shown below the text, with `imageAlt` as its description.
function ask({ title, text = "", label = "", value = "", ok = "OK", secret = false, danger = false, extra = null,
  image = null, imageAlt = "" }) {
  const d = $("#dialog");
  $("#dialog-title").textContent = title;
  $("#dialog-text").textContent = text;
  const picture = $("#dialog-image");
  picture.hidden = !image;
  if (image) { picture.src = image; picture.alt = imageAlt; } else picture.removeAttribute("src");
  const input = $("#dialog-input");
  $("#dialog-label").hidden = !label;
  $("#dialog-label-text").textContent = label;
  input.type = secret ? "password" : "text";
  input.value = value;
  const second = $("#dialog-extra-input");
  $("#dialog-extra").hidden = !extra;
  $("#dialog-extra-text").textContent = extra ? extra.label : "";
  second.value = extra ? extra.value || "" : "";
  second.placeholder = extra ? extra.placeholder || "" : "";
  const answer = () => (extra ? [input.value, second.value] : input.value);
  const okButton = $("#dialog-ok");
  okButton.textContent = ok;
  okButton.classList.toggle("danger", danger);
  return new Promise((resolve) => {
    const done = (answer) => {
      okButton.onclick = null; $("#dialog-cancel").onclick = null; input.onkeydown = null;
      second.onkeydown = null; d.onclose = null;
      if (d.open) d.close();
      resolve(answer);
    };
    okButton.onclick = () => done(label ? answer() : true);
    $("#dialog-cancel").onclick = () => done(null);
    input.onkeydown = second.onkeydown = (e) => { if (e.key === "Enter") { e.preventDefault(); done(answer()); } };
    d.onclose = () => done(null);
    d.showModal();
    if (label) { input.focus(); input.select(); } else okButton.focus();
  });
}

async function askToken(why) {
  const t = await ask({
    title: "Access token",
    text: why || "A token gives you the rights its owner was given. It is kept in this tab only.",
    label: "Token", value: token, secret: true, ok: "Use this token",
  });
  if (t === null) return false;
  token = t.trim();
  sessionStorage.setItem("troca-token", token);
  await refreshAll();
  return true;
}

// ---- Requests.

// This browser's owner key for the hub: what it uploads, it may replace, move and delete again
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

function headers(extra = {}) {
  const h = { ...extra };
  const k = ownerKey();
  if (k) h["X-Troca-Owner"] = k;
  if (token) h.Authorization = `Bearer ${token}`;
  return h;
}

async function api(path, opts = {}) {
  const url = path.startsWith("/api/") ? base + path : path;
  const r = await fetch(url, { ...opts, headers: headers(opts.headers || {}) });
  lastSeen = new Date();
  return r;
}

// What went wrong, in the words of someone using this page.
async function problem(r, name) {
  const body = await r.json().catch(() => ({}));
  switch (body.error) {
    case "unauthorized": return "This needs a valid token. Use the Token button to enter one.";
    case "forbidden": return uploadOnly ? "This link only sends new files; it cannot do that."
      : rights.role === "anonymous"
      ? "Only the one who uploaded it, or someone with a token that allows it, can do that."
      : rights.folder ? `Your token reaches only the folder ${rights.folder}/.`
      : "Your token does not allow that.";
    case "already_exists": return `${name} already exists here.`;
    case "is_a_folder": return `${name} cannot go there: a folder is never replaced, ` +
      "nor a file by a folder. Move or delete what is in the way first.";
    case "not_found": return `${name} is no longer on the hub.`;
    case "not_empty": return `The folder ${name} is not empty.`;
    case "no_space": return "The hub has no room left for this.";
    case "busy": return "The hub is busy; try again in a moment.";
    case "quota": return uploadOnly
      ? "This link takes no more files: what was sent through it has reached what its maker allowed."
      : "This hub takes no more uploads from your address for now" +
      (body.retry_after ? `; try again in ${Math.ceil(body.retry_after / 60)} min` : "") +
      ". A token lifts the limit: use the Token button to enter one.";
    default: return body.message || `The hub answered ${r.status} ${r.statusText}.`;
  }
}

// ---- The listing.
//
// The hub sends this folder's rows as HTML, a page at a time, each marked with what this
// script needs: its name, what a folder holds (once counted), and whether this visitor may
// rename or delete it. The script asks for the same page again with the visitor's token and
// owner key, and adds the buttons.

// What the actions need to know of a row: its name, and a folder's files (null: not counted).
function itemOf(tr) {
  const name = tr.dataset.name;
  const isFolder = name.endsWith("/");
  const bare = isFolder ? name.slice(0, -1) : name;
  const count = tr.dataset.files === undefined ? null : Number(tr.dataset.files);
  return { name, short: bare.slice(bare.lastIndexOf("/") + 1), folder: isFolder, count };
}

function actionButton(text, label, onClick, danger = false) {
  const b = el("button", { type: "button", textContent: text, className: danger ? "danger" : "" });
  b.setAttribute("aria-label", label);
  b.addEventListener("click", onClick);
  return b;
}

// Adds to a row what needs this script: a download that carries the token, and Rename and
// Delete where the visitor may.
function enhance(tr) {
  if (!tr.dataset.name) return tr;
  const item = itemOf(tr);
  const link = tr.querySelector("td.name a");
  if (!item.folder && link) {
    link.href = href(item.name) + "?download=1";
    link.setAttribute("download", item.short);
    link.addEventListener("click", (ev) => {
      if (!token) return; // a plain link works without a token (and carries a share link's)
      ev.preventDefault();
      download(item);
    });
  }
  const actions = tr.querySelector("td.actions");
  if (actions) {
    const buttons = [];
    if (mayShare()) buttons.push(actionButton("Share", `Make a link to ${item.short}`, () => share(item)));
    if (mayCopy()) buttons.push(actionButton("Copy", `Copy ${item.short}`, () => copy(item)));
    if (tr.dataset.mine) {
      buttons.push(actionButton("Rename", `Rename or move ${item.short}`, () => rename(item)),
        actionButton("Delete", `Delete ${item.short}`, () => remove(item), true));
    }
    actions.replaceChildren(...buttons);
  }
  return tr;
}

// A row for a search's match, shown with its whole name.
function foundRow(f) {
  const isFolder = f.name.endsWith("/");
  const sizeText = isFolder ? "" : size(f.size);
  const tr = el("tr", {},
    el("td", { className: isFolder ? "name folder" : "name" },
      el("a", { href: href(f.name), textContent: f.name }),
      el("span", { className: "meta", textContent: `${sizeText} · ${when(f.modified)}` })),
    el("td", { className: "num", textContent: sizeText }),
    el("td", { className: "when" }, el("time", { dateTime: f.modified, textContent: when(f.modified) })),
    el("td", { className: "actions" }));
  tr.dataset.name = f.name;
  if (f.mine) tr.dataset.mine = "1";
  return enhance(tr);
}

function render() {
  $("#files tbody").replaceChildren(...shownRows);
  $("#zip").hidden = !folder || !shownRows.some((tr) => tr.dataset.name);
}

// Puts the page's link to its next rows where it belongs (or takes it away).
function placeMore(fresh) {
  const old = $("#more");
  if (old && fresh) old.replaceWith(fresh);
  else if (old) old.remove();
  else if (fresh) $("#files").after(fresh);
}

// The page of an upload link: where files go, and how much more the link takes.
async function loadUploadPage() {
  const me = await api(`/api/me?prefix=${encodeURIComponent(folder)}&owned=0`);
  if (!me.ok) { say(await problem(me, folder)); return; }
  rights = await me.json();
  for (const id of ["#upload-label", "#upload-folder-label", "#drop"]) $(id).hidden = !rights.may_upload;
  const q = rights.quota;
  const left = [];
  if (q && q.bytes) left.push(`${size(Math.max(0, q.bytes - q.used_bytes))}`);
  if (q && q.files) left.push(plural(Math.max(0, q.files - q.used_files), "file", "files"));
  $("#status").textContent = `Send files to ${rights.folder || folder}/` +
    (left.length ? ` · this link takes ${left.join(" or ")} more` : "");
}

async function loadFiles() {
  if (uploadOnly) return loadUploadPage();
  const [r, me] = await Promise.all([
    api(location.pathname + location.search),
    api(`/api/me?prefix=${encodeURIComponent(folder)}&owned=0`),
  ]);
  if (me.ok) {
    rights = await me.json();
    // A token held to a folder sees nothing on the way there but the way: go straight in.
    const own = rights.folder ? rights.folder + "/" : null;
    if (own && own !== folder && own.startsWith(folder)) {
      // A share link's may be a file: named without its slash, the hub sends a folder on to
      // its page and a file as itself (the link's path carries its token, as a page's own
      // navigation could not).
      location.replace(href(shared ? rights.folder : own));
      return;
    }
  }
  if (r.status === 401 && !token) { await askToken("This hub asks for a token before it shows its files."); return; }
  if (!r.ok) { say(await problem(r, folder || "this folder")); return; }
  const page = new DOMParser().parseFromString(await r.text(), "text/html");
  shownRows = [...page.querySelectorAll("#files tbody tr")].map((tr) => enhance(document.adoptNode(tr)));
  const more = page.querySelector("#more");
  placeMore(more && document.adoptNode(more));
  for (const id of ["#upload-label", "#upload-folder-label", "#new-folder"]) $(id).hidden = !rights.may_upload;
  $("#drop").hidden = !rights.may_upload;
  const reach = rights.folder ? `, ${rights.folder}/` : "";
  const q = rights.quota;
  const kept = q && q.bytes ? `, ${size(q.used_bytes)} of ${size(q.bytes)} used`
    : q && q.files ? `, ${q.used_files} of ${q.files} files` : "";
  $("#token-button").textContent = rights.role === "anonymous" ? "Token…" : `Token (${rights.role}${reach}${kept})`;
  if (shared) $("#status").textContent = `Shared with you: ${rights.folder || ""}`;
  $("#links-button").hidden = !mayShare();
  $("#request-button").hidden = !mayShare() || !folder;
  // What you may still upload here: the disk's room, within your token's quota.
  $("#room").hidden = !rights.may_upload || typeof rights.room !== "number";
  $("#room").textContent = $("#room").hidden ? "" : `${size(rights.room)} free for your uploads`;
  if (!searching()) render();
}

// ---- Search across every folder.

function searching() { return $("#search").value.trim() !== ""; }

let searchTimer = null;
function searchSoon() {
  clearTimeout(searchTimer);
  searchTimer = setTimeout(search, 250);
}

async function search() {
  const q = $("#search").value.trim();
  if (!q) { render(); return; }
  const r = await api(`/api/find?q=${encodeURIComponent(q)}`);
  if (!r.ok) { say(await problem(r, q)); return; }
  const found = await r.json();
  const rows = found.map(foundRow);
  if (rows.length === 0) rows.push(el("tr", { className: "empty" }, el("td", { colSpan: 4, textContent: `No file or folder name contains “${q}”.` })));
  // The hub answers at most 5,000, the first by name, and looks at a bounded number of names.
  if (r.headers.get("X-Troca-Cut")) {
    const why = found.length >= 5000
      ? "Only the first 5,000 matches are shown. Type more of the name to narrow the search."
      : "The hub stopped looking before the end of the share: there may be more matches.";
    rows.push(el("tr", { className: "empty" }, el("td", { colSpan: 4, textContent: why })));
  }
  $("#files tbody").replaceChildren(...rows);
}

// ---- Operations.

// With a token, a download goes through fetch so the token travels in a header.
async function download(f) {
  const r = await api(href(f.name));
  if (!r.ok) { say(await problem(r, f.name)); return; }
  const url = URL.createObjectURL(await r.blob());
  const a = el("a", { href: url });
  a.download = f.short;
  document.body.append(a);
  a.click();
  a.remove();
  setTimeout(() => URL.revokeObjectURL(url), 10000);
}

async function remove(item) {
  const text = !item.folder ? `${item.name} will be deleted from the hub.`
    : item.count === null ? `The folder ${item.name} and everything in it will be deleted from the hub.`
    : `The folder ${item.name} and the ${plural(item.count, "file", "files")} in it will be deleted from the hub.`;
  if (!await ask({ title: `Delete ${item.short}?`, text, ok: "Delete", danger: true })) return;
  const r = await api(href(item.name) + (item.folder ? "?recursive=1" : ""), { method: "DELETE" });
  if (!r.ok) { say(`Cannot delete ${item.name}: ${await problem(r, item.name)}`); return; }
  say("");
  await refreshAll();
}

async function move(from, to, force = false) {
  return api("/api/move", {
    method: "POST",
    headers: { "Content-Type": "application/json" },
    body: JSON.stringify({ from, to, force }),
  });
}

// A write or admin token may hand out links that let anyone who has one read a file or folder.
function mayShare() {
  return !shared && (rights.role === "write" || rights.role === "admin");
}

// A link to read `item`, or with `upload` one to send files into folder `item`.
async function share(item, upload = false) {
  const text = upload
    ? `Anyone who has the link can send files into ${item.name}, without a token and without ` +
      "seeing what is in it, until it expires or you revoke it. What they send is yours to rename and delete."
    : `Anyone who has the link can download ${item.folder ? "this folder and everything in it" : "this file"}, ` +
      "without a token, until it expires or you revoke it.";
  // A link to read may stop after so many downloads (each file fetched, or a zip).
  const extra = upload ? null
    : { label: "Downloads allowed (empty: any number)", placeholder: "any number" };
  const answer = await ask({
    title: upload ? `Ask for files in ${item.short}` : `Share ${item.short}`,
    text, label: "Days the link works", value: "7", ok: "Make link", extra,
  });
  if (answer === null) return;
  const [days, downloads] = upload ? [answer, ""] : answer;
  const n = Number(days);
  if (!(n > 0)) { say("The number of days must be above zero."); return; }
  const most = downloads.trim() === "" ? 0 : Number(downloads);
  if (!(Number.isInteger(most) && most >= 0)) { say("The number of downloads must be a whole number."); return; }
  const r = await api("/api/shares", {
    method: "POST",
    headers: { "Content-Type": "application/json" },
    body: JSON.stringify({ name: item.name, expires_s: Math.round(n * 86400), upload, max_downloads: most }),
  });
  if (!r.ok) { say(`Cannot share ${item.name}: ${await problem(r, item.name)}`); return; }
  const made = await r.json();
  const link = location.origin + made.path;
  const copy = await ask({
    image: await qrCode(link), imageAlt: `A QR code of the link to ${item.short}, to scan with a phone`,
    title: upload ? `Link to send files to ${item.short}` : `Link to ${item.short}`,
    text: `Works until ${new Date(made.expires).toLocaleString()}` +
      (made.max_downloads ? `, for ${plural(made.max_downloads, "download", "downloads")}` : "") +
      ". Share links lists it, to revoke it.",
    label: "Link", value: link, ok: "Copy",
  });
  if (copy !== null && navigator.clipboard) await navigator.clipboard.writeText(link).catch(() => {});
  say("");
}

// `text` as a QR code image (a data: URL), drawn by the hub; null if it cannot be. The link
// goes in the body, so its secret stays out of any access log.
async function qrCode(text) {
  const r = await api("/api/qr", { method: "POST", headers: { "Content-Type": "text/plain" }, body: text })
    .catch(() => null);
  if (!r || !r.ok) return null;
  return "data:image/svg+xml;charset=utf-8," + encodeURIComponent(await r.text());
}

// The visitor's share links, each with what it shares, until when, and a Revoke button.
async function showLinks() {
  const r = await api("/api/shares");
  if (!r.ok) { say(await problem(r, "share links")); return; }
  const links = await r.json();
  $("#links-none").hidden = links.length > 0;
  $("#links-list").replaceChildren(...links.map((l) => {
    const active = l.state === "active";
    const what = l.upload
      ? `files sent to ${l.name} (${plural(l.upload.files, "file", "files")}, ${size(l.upload.bytes)} so far)`
      : l.max_downloads ? `${l.name} (${l.downloads} of ${plural(l.max_downloads, "download", "downloads")})`
      : l.name;
    const text = el("span", {
      textContent: `${what} · ${active ? "until " + new Date(l.expires).toLocaleString() : l.state}`,
    });
    const li = el("li", { className: active ? "" : "gone" }, text);
    if (active) {
      li.append(actionButton("Revoke", `Revoke the link to ${l.name}`, async () => {
        const gone = await api(`/api/shares/${l.id}`, { method: "DELETE" });
        if (!gone.ok) { say(await problem(gone, l.name)); return; }
        await showLinks();
      }, true));
    }
    return li;
  }));
  if (!$("#links").open) $("#links").showModal();
}

async function rename(item) {
  const from = item.folder ? item.name.slice(0, -1) : item.name;
  const to = await ask({
    title: `Rename or move ${item.short}`,
    text: "A new name, or a path such as photos/2024/ to move it into a folder.",
    label: "New name", value: from, ok: "Rename",
  });
  if (to === null || to.trim() === "" || to.trim() === from) return;
  let r = await move(from, to.trim());
  if (r.status === 409) {
    const body = await r.clone().json().catch(() => ({}));
    if (body.error === "already_exists" && !item.folder &&
        await ask({ title: `Replace ${to.trim()}?`, text: `${to.trim()} already exists. Replace it with ${from}?`, ok: "Replace", danger: true })) {
      r = await move(from, to.trim(), true);
    }
  }
  if (!r.ok) { say(`Cannot rename ${from}: ${await problem(r, to.trim())}`); return; }
  say("");
  await refreshAll();
}

// Whoever may upload may copy what they can see: the copy is theirs.
function mayCopy() {
  return !shared && rights.may_upload && rights.role !== "upload";
}

async function copyTo(from, to, force = false) {
  return api("/api/copy", {
    method: "POST",
    headers: { "Content-Type": "application/json" },
    body: JSON.stringify({ from, to, force }),
  });
}

// The hub copies (a folder with everything in it): nothing goes through the browser.
async function copy(item) {
  const from = item.folder ? item.name.slice(0, -1) : item.name;
  const dot = item.folder ? -1 : from.lastIndexOf(".");
  const suggested = dot > from.lastIndexOf("/") + 1
    ? `${from.slice(0, dot)} (copy)${from.slice(dot)}` : `${from} (copy)`;
  const to = await ask({
    title: `Copy ${item.short}`,
    text: "The copy's name, or a folder such as backup/ to copy it into.",
    label: "Copy to", value: suggested, ok: "Copy",
  });
  if (to === null || to.trim() === "" || to.trim() === from) return;
  say(`Copying ${from}…`);
  let r = await copyTo(from, to.trim());
  if (r.status === 409) {
    const body = await r.clone().json().catch(() => ({}));
    if (body.error === "already_exists" && !item.folder &&
        await ask({ title: `Replace ${to.trim()}?`, text: `${to.trim()} already exists. Replace it with a copy of ${from}?`, ok: "Replace", danger: true })) {
      r = await copyTo(from, to.trim(), true);
    }
  }
  if (!r.ok) { say(`Cannot copy ${from}: ${await problem(r, to.trim())}`); return; }
  say("");
  await refreshAll();
}

async function newFolder() {
  const name = await ask({ title: "New folder", text: folder ? `Inside ${folder}` : "", label: "Folder name", ok: "Create" });
  if (name === null || !name.trim()) return;
  const r = await api("/api/folders", {
    method: "POST",
    headers: { "Content-Type": "application/json" },
    body: JSON.stringify({ name: folder + name.trim().replace(/\/+$/, "") }),
  });
  if (!r.ok) { say(`Cannot create ${name}: ${await problem(r, name)}`); return; }
  say("");
  await refreshAll();
}

// Files larger than this go on, after a lost connection, from what the hub holds; how many
// times an upload is tried in all.
const RESUMABLE = 1 << 20;
const TRIES = 6;

function resumable(file) {
  return file.size > RESUMABLE && file.lastModified > 0;
}

// Sends `file` from byte `from` once: the answer, or null when the connection was lost.
function send(file, name, overwrite, from, bar) {
  return new Promise((resolve) => {
    const xhr = new XMLHttpRequest();
    xhr.open("PUT", href(name) + (overwrite ? "?overwrite=1" : ""));
    for (const [k, v] of Object.entries(headers())) xhr.setRequestHeader(k, v);
    // The file's time: the hub gives the stored file it, and knows a resumed upload by it.
    if (file.lastModified > 0) xhr.setRequestHeader("X-Troca-Modified", String(file.lastModified));
    if (resumable(file) && from > 0) {
      xhr.setRequestHeader("Content-Range", `bytes ${from}-${file.size - 1}/${file.size}`);
    }
    xhr.upload.addEventListener("progress", (e) => { bar.value = from + e.loaded; });
    xhr.addEventListener("load", async () => {
      const r = new Response(xhr.responseText, { status: xhr.status });
      resolve({ status: xhr.status, r, body: await r.clone().json().catch(() => ({})) });
    });
    xhr.addEventListener("error", () => resolve(null));
    xhr.send(from > 0 ? file.slice(from) : file);
  });
}

// How much of `file` an earlier upload to `name` left on the hub (0 if none, or unknown).
async function held(file, name) {
  if (!resumable(file)) return 0;
  const q = new URLSearchParams({ name, size: file.size, modified: file.lastModified });
  try {
    const r = await api(`/api/resume?${q}`);
    return r.ok ? (await r.json()).offset || 0 : 0;
  } catch (_) {
    return 0;
  }
}

// Sends `file`; a large one whose connection is lost goes on from what the hub holds, after
// pauses of 1, 2, 4… s. The last answer, or null if the connection was lost every time.
async function sendAll(file, name, overwrite, bar) {
  let from = await held(file, name);
  for (let tries = 1; ; tries++) {
    const answer = await send(file, name, overwrite, from, bar);
    if (answer && answer.status === 409 && typeof answer.body.offset === "number") {
      from = answer.body.offset; // the hub holds less than asked for: from there
      continue;
    }
    const lost = !answer || [408, 502, 503, 504].includes(answer.status);
    if (!lost || !resumable(file) || tries >= TRIES) return answer;
    await new Promise((done) => setTimeout(done, 1000 << (tries - 1)));
    from = await held(file, name);
  }
}

// `name` with ` (n)` before its extension: what an upload link sends a file as when the
// folder holds one by its name already (it never replaces one).
function numbered(name, n) {
  const slash = name.lastIndexOf("/") + 1;
  const dot = name.lastIndexOf(".");
  const cut = dot > slash ? dot : name.length;
  return `${name.slice(0, cut)} (${n})${name.slice(cut)}`;
}

// Shows a file this page sent through an upload link, under the name it went in as.
function sent(name, bytes) {
  const empty = $("#files tbody tr.empty");
  if (empty) empty.remove();
  const short = name.slice(folder.length);
  $("#files tbody").append(el("tr", {},
    el("td", { className: "name", textContent: short }),
    el("td", { className: "num", textContent: size(bytes) }),
    el("td", { className: "when", textContent: "sent" }),
    el("td", { className: "actions" })));
}

// One upload with its own progress bar; asks before replacing a file. Through an upload
// link, a name taken already is numbered instead (`report (2).pdf`), up to 100 times.
async function upload(file, wanted, overwrite = false, taken = 0) {
  const name = taken ? numbered(wanted, taken + 1) : wanted;
  const bar = el("progress", { max: file.size || 1, value: 0 });
  const item = el("li", {}, el("span", { textContent: name }), bar);
  $("#uploads").append(item);
  const answer = await sendAll(file, name, overwrite, bar);
  item.remove();
  if (!answer) {
    say(`Cannot upload ${name}: the connection to the hub was lost.`);
    return false;
  }
  const { status, r, body } = answer;
  if (status === 201 && uploadOnly) sent(body.name || name, file.size);
  if (status === 201) return true;
  if (uploadOnly && status === 409 && body.error === "already_exists" && taken < 99) {
    return upload(file, wanted, false, taken + 1);
  }
  if (status === 409 && !overwrite && body.error === "already_exists" &&
      await ask({ title: `Replace ${name}?`, text: `${name} already exists on the hub.`, ok: "Replace", danger: true })) {
    return upload(file, name, true);
  }
  if (!shared && !uploadOnly && [401, 403, 429].includes(status) && await askToken(await problem(r, name))) {
    return upload(file, name, overwrite);
  }
  say(`Cannot upload ${name}: ${await problem(r, name)}`);
  return false;
}

// Uploads [file, relative name] pairs into this folder, a few at a time.
async function uploadAll(pairs) {
  let next = 0;
  const worker = async () => {
    while (next < pairs.length) {
      const [file, rel] = pairs[next++];
      await upload(file, folder + rel);
    }
  };
  await Promise.all([worker(), worker(), worker()]);
  await refreshAll();
}

// The files of a dropped folder, read through the entries API.
async function entryFiles(entry, path, out) {
  if (entry.isFile) {
    out.push([await new Promise((ok, bad) => entry.file(ok, bad)), path + entry.name]);
  } else if (entry.isDirectory) {
    const reader = entry.createReader();
    for (;;) {
      const batch = await new Promise((ok, bad) => reader.readEntries(ok, bad));
      if (batch.length === 0) break;
      for (const e of batch) await entryFiles(e, path + entry.name + "/", out);
    }
  }
}

async function dropped(dt) {
  const entries = [...dt.items].map((i) => i.webkitGetAsEntry && i.webkitGetAsEntry()).filter(Boolean);
  if (entries.length === 0) return uploadAll([...dt.files].map((f) => [f, f.name]));
  const pairs = [];
  for (const e of entries) await entryFiles(e, "", pairs);
  return uploadAll(pairs);
}

// ---- Status, clients, activity.

function showUnreachable() {
  const s = $("#status");
  s.classList.add("offline");
  s.textContent = lastSeen
    ? `Cannot reach the hub (last answer at ${lastSeen.toLocaleTimeString()})`
    : "Cannot reach the hub";
}

async function refreshSide() {
  const poll = { "X-Troca-Poll": "1" };
  let s, c, h;
  try {
    [s, c, h] = await Promise.all([
      api("/api/status", { headers: poll }), api("/api/clients", { headers: poll }),
      api("/api/history?limit=15", { headers: poll }),
    ]);
  } catch (_) {
    showUnreachable();
    return;
  }
  $("#status").classList.remove("offline");
  if (s.ok) {
    const st = await s.json();
    const up = st.uptime_s;
    const uptime = up >= 86400 ? `${Math.floor(up / 86400)}d` : up >= 3600 ? `${Math.floor(up / 3600)}h` : `${Math.floor(up / 60)}m`;
    $("#status").textContent =
      `${plural(st.files, "file", "files")}, ${size(st.bytes)} · ${st.clients} connected · up ${uptime}`;
  }
  if (c.ok || h.ok) $("aside").hidden = false;
  if (c.ok) {
    $("#clients").replaceChildren(...(await c.json()).map((x) =>
      el("li", { textContent: `${x.name} (${x.address})${x.activity !== "idle" ? ` — ${x.activity} ${x.target}` : ""}` })));
  }
  if (h.ok) {
    $("#history").replaceChildren(...(await h.json()).map((x) =>
      el("li", {
        className: x.ok ? "" : "failed",
        textContent: `${new Date(x.time).toLocaleTimeString()} ${x.client} ${x.op} ${x.target}${x.ok ? "" : " — " + x.error}`,
      })));
  }
}

async function refreshAll() {
  try {
    await loadFiles();
    if (searching()) await search();
  } catch (_) {
    showUnreachable();
  }
  if (!shared) refreshSide();
}

function setup() {
  $("#search").hidden = uploadOnly;
  $("#token-button").hidden = shared;
  $("#search").addEventListener("input", searchSoon);
  $("#zip").href = href(folder) + "?zip";
  $("#new-folder").addEventListener("click", newFolder);
  $("#upload").addEventListener("change", (e) => {
    uploadAll([...e.target.files].map((f) => [f, f.name]));
    e.target.value = "";
  });
  $("#upload-folder").addEventListener("change", (e) => {
    uploadAll([...e.target.files].map((f) => [f, f.webkitRelativePath || f.name]));
    e.target.value = "";
  });
  $("#token-button").addEventListener("click", () => askToken());
  $("#links-button").addEventListener("click", showLinks);
  $("#request-button").addEventListener("click", () => {
    const short = folder.slice(0, -1).split("/").pop();
    share({ name: folder, short, folder: true }, true);
  });
  $("#links-close").addEventListener("click", () => $("#links").close());
  const drop = $("#drop");
  for (const ev of ["dragenter", "dragover"]) {
    document.addEventListener(ev, (e) => { e.preventDefault(); if (rights.may_upload) drop.classList.add("over"); });
  }
  for (const ev of ["dragleave", "drop"]) {
    document.addEventListener(ev, (e) => { e.preventDefault(); drop.classList.remove("over"); });
  }
  document.addEventListener("drop", (e) => {
    if (rights.may_upload && e.dataTransfer && e.dataTransfer.items.length) dropped(e.dataTransfer);
  });
  refreshAll();
  // Refreshing the side panels is marked as polling, so it stays out of the history; and only
  // while someone looks.
  if (!shared) setInterval(() => { if (document.visibilityState === "visible") refreshSide(); }, 10000);
}

setup();
