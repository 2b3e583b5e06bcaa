// stylestream page: camera -> server (WebRTC) -> stylized video back on the same connection.
"use strict";

const $ = (id) => document.getElementById(id);

// A URL like http://host:8080/#token=... (printed by the server) carries the token after '#', which
// browsers never send; keep it for this tab and take it out of the address bar and history.
(() => {
  const fromUrl = new URLSearchParams(location.hash.slice(1)).get("token");
  if (fromUrl) {
    sessionStorage.setItem("stylestream-token", fromUrl);
    history.replaceState(null, "", location.pathname + location.search);
  }
})();
const state = { token: sessionStorage.getItem("stylestream-token") || "", config: null, styles: [],
  style: null, params: {}, pc: null, stream: null, session: null, statsTimer: null, errorsShown: new Set() };
window.stylestream = state; // for debugging and tests

function showMessage(text, kind = "error") {
  const m = $("message");
  m.textContent = text;
  m.className = kind;
  m.hidden = !text;
}

async function api(path, options = {}) {
  const headers = Object.assign({}, options.headers || {});
  if (state.token) headers.Authorization = `Bearer ${state.token}`;
  let resp;
  try {
    resp = await fetch(path, Object.assign({}, options, { headers }));
  } catch (err) {
    throw new Error(`The server is unreachable (${err.message}). Is "stylestream serve" running?`);
  }
  if (resp.status === 401) {
    $("token-form").hidden = false;
    throw new Error("This server needs a token: enter the one it was started with (--token).");
  }
  const body = resp.headers.get("Content-Type")?.includes("json") ? await resp.json() : await resp.text();
  if (!resp.ok) throw new Error(body.error || `HTTP ${resp.status}`);
  return body;
}

async function loadStyles() {
  state.config = await api("/api/config");
  const data = await api("/api/styles");
  state.styles = data.styles;
  if (!state.style) state.style = data.default;
  const box = $("styles");
  box.replaceChildren();
  for (const s of data.styles) {
    const b = document.createElement("button");
    b.type = "button";
    b.className = "style";
    b.dataset.style = s.name;
    b.title = s.description || s.title;
    if (s.thumbnail) {
      const img = document.createElement("img");
      img.alt = "";
      thumbnail(s.thumbnail).then((url) => { img.src = url; }).catch(() => {});
      b.append(img);
    } else {
      const sw = document.createElement("span");
      sw.className = "swatch";
      sw.textContent = (s.title || s.name).slice(0, 1).toUpperCase(); // no thumbnail: its initial
      b.append(sw);
    }
    b.append(document.createTextNode(s.title || s.name));
    b.addEventListener("click", () => selectStyle(s.name));
    box.append(b);
  }
  renderStyle();
  $("token-form").hidden = true;
}

async function thumbnail(url) {
  // Fetched with the token (an <img src> cannot send it), shown from a blob URL.
  const headers = state.token ? { Authorization: `Bearer ${state.token}` } : {};
  const resp = await fetch(url, { headers });
  if (!resp.ok) throw new Error(resp.statusText);
  return URL.createObjectURL(await resp.blob());
}

function renderStyle() {
  for (const b of document.querySelectorAll(".style")) b.classList.toggle("active", b.dataset.style === state.style);
  $("current-style").textContent = state.style || "—";
  const style = state.styles.find((s) => s.name === state.style);
  const box = $("params");
  box.replaceChildren();
  for (const p of style ? style.params : []) {
    const label = document.createElement("label");
    const value = state.params[p.name] ?? p.default;
    label.textContent = `${p.label}: `;
    const out = document.createElement("output");
    out.textContent = value;
    const input = Object.assign(document.createElement("input"),
      { type: "range", min: p.min, max: p.max, step: p.step, value, title: p.help });
    input.dataset.param = p.name;
    input.addEventListener("input", () => { out.textContent = input.value; sendParams(p.name, Number(input.value)); });
    label.append(out, input);
    box.append(label);
  }
}

async function selectStyle(name) {
  state.style = name;
  state.params = {};
  renderStyle();
  if (state.session) {
    try {
      await api(`/api/sessions/${state.session}`, { method: "PATCH", headers: { "Content-Type": "application/json" },
        body: JSON.stringify({ style: name }) });
    } catch (err) { showMessage(err.message); }
  }
}

let paramTimer = null;
function sendParams(name, value) {
  state.params[name] = value;
  clearTimeout(paramTimer); // a slider fires many events: send the last one
  paramTimer = setTimeout(async () => {
    if (!state.session) return;
    try {
      await api(`/api/sessions/${state.session}`, { method: "PATCH", headers: { "Content-Type": "application/json" },
        body: JSON.stringify({ params: state.params }) });
    } catch (err) { showMessage(err.message); }
  }, 80);
}

async function start() {
  showMessage("");
  $("start").disabled = true;
  try {
    try {
      state.stream = await navigator.mediaDevices.getUserMedia({
        video: { width: { ideal: 640 }, height: { ideal: 480 }, frameRate: { ideal: 30 } }, audio: false });
    } catch (err) {
      const denied = err.name === "NotAllowedError" || err.name === "SecurityError";
      throw new Error(denied
        ? "Camera access was denied. Allow the camera for this site (address bar icon) and press Start again."
        : `No camera could be opened (${err.name}: ${err.message}). Browsers allow the camera only on ` +
          "localhost or HTTPS (start the server with --cert/--key).");
    }
    $("camera").srcObject = state.stream;
    const pc = new RTCPeerConnection({ iceServers: state.config?.iceServers || [] });
    state.pc = pc;
    const track = state.stream.getVideoTracks()[0];
    const tr = pc.addTransceiver(track, { direction: "sendrecv" });
    pc.ontrack = (ev) => { $("output").srcObject = new MediaStream([ev.track]); };
    const channel = pc.createDataChannel("control");
    channel.onmessage = (ev) => onEvent(JSON.parse(ev.data));
    pc.onconnectionstatechange = () => {
      if (pc.connectionState === "failed") showMessage("The connection to the server failed (network or firewall).");
      if (pc.connectionState === "disconnected") showMessage("Connection lost; trying to recover…", "info");
      if (pc.connectionState === "connected") showMessage("");
    };
    await pc.setLocalDescription(await pc.createOffer());
    await iceGathered(pc);
    const answer = await api("/api/offer", { method: "POST", headers: { "Content-Type": "application/json" },
      body: JSON.stringify({ sdp: pc.localDescription.sdp, type: "offer", style: state.style, params: state.params }) });
    state.session = answer.session;
    await pc.setRemoteDescription({ type: "answer", sdp: answer.sdp });
    await keepResolution(tr.sender);
    state.statsTimer = setInterval(updateStats, 1000);
    $("stop").disabled = false;
  } catch (err) {
    showMessage(err.message);
    await stop();
  }
}

function iceGathered(pc) {
  // The server does not trickle: send the offer with all candidates (or after 2 s, what we have).
  if (pc.iceGatheringState === "complete") return Promise.resolve();
  return new Promise((resolve) => {
    const done = () => { if (pc.iceGatheringState === "complete") resolve(); };
    pc.addEventListener("icegatheringstatechange", done);
    setTimeout(resolve, 2000);
  });
}

async function keepResolution(sender) {
  // Prefer fewer frames over a smaller picture, and allow the bitrate the server accepts.
  try {
    const p = sender.getParameters();
    p.degradationPreference = "maintain-resolution";
    if (!p.encodings || !p.encodings.length) p.encodings = [{}];
    if (state.config?.maxBitrateKbps) p.encodings[0].maxBitrate = state.config.maxBitrateKbps * 1000;
    await sender.setParameters(p);
  } catch (err) { console.debug("setParameters:", err); }
}

function onEvent(ev) {
  if (ev.type === "error" && !state.errorsShown.has(ev.message)) {
    state.errorsShown.add(ev.message);
    showMessage(`${ev.message} — frames pass through unchanged.`);
  }
}

async function updateStats() {
  if (!state.session) return;
  let s;
  try { s = await api(`/api/sessions/${state.session}`); } catch (err) { showMessage(err.message); return; }
  const size = (v) => (v ? `${v[0]}×${v[1]}` : "—");
  $("stat-fps").textContent = `${s.fps_in} / ${s.fps_out}`;
  $("stat-latency").textContent = s.latency_ms == null ? "—" : `${s.latency_ms} ms`;
  $("stat-inference").textContent = s.inference_ms == null ? "—" : `${s.inference_ms} ms`;
  $("stat-dropped").textContent = `${s.dropped} of ${s.frames_in}`;
  $("stat-size").textContent = `${size(s.in_size)} → ${size(s.out_size)}`;
  $("stat-proc").textContent = s.proc_size ? `${size(s.proc_size)}${s.adapting ? " (adapting to hold the frame rate)" : ""}` : "—";
  $("stat-backend").textContent = s.backend || "—";
  const cam = state.stream?.getVideoTracks()[0]?.getSettings();
  $("camera-size").textContent = cam ? `${cam.width}×${cam.height}` : "";
  const out = $("output");
  $("output-size").textContent = out.videoWidth ? `${out.videoWidth}×${out.videoHeight}` : "";
  for (const e of s.errors || []) onEvent({ type: "error", message: e });
  try {
    const report = await state.pc.getStats();
    report.forEach((r) => {
      if (r.type === "candidate-pair" && r.nominated && r.currentRoundTripTime != null)
        $("stat-rtt").textContent = `${Math.round(r.currentRoundTripTime * 1000)} ms`;
    });
  } catch (err) { /* stats are best effort */ }
}

async function stop() {
  clearInterval(state.statsTimer);
  const sid = state.session;
  state.session = null;
  if (sid) api(`/api/sessions/${sid}`, { method: "DELETE" }).catch(() => {});
  state.pc?.close();
  state.pc = null;
  state.stream?.getTracks().forEach((t) => t.stop());
  state.stream = null;
  $("camera").srcObject = null;
  $("output").srcObject = null;
  $("start").disabled = false;
  $("stop").disabled = true;
}

$("start").addEventListener("click", start);
$("stop").addEventListener("click", () => { showMessage(""); stop(); });
$("token-form").addEventListener("submit", (ev) => {
  ev.preventDefault();
  state.token = $("token").value.trim();
  sessionStorage.setItem("stylestream-token", state.token);
  loadStyles().then(() => showMessage("")).catch((err) => showMessage(err.message));
});
window.addEventListener("beforeunload", () => { if (state.session) stop(); });
loadStyles().catch((err) => showMessage(err.message));
