// WHEP player: plays a session's stylized output full-window (for OBS's Browser Source).
"use strict";

(async () => {
  const sid = location.pathname.split("/").pop();
  const token = new URLSearchParams(location.hash.slice(1)).get("token");
  const msg = document.getElementById("message");
  const fail = (text) => { msg.textContent = text; msg.hidden = false; };
  const auth = token ? { Authorization: `Bearer ${token}` } : {};
  // The server's ICE servers (none unless its operator configured some): never a browser default.
  const config = await fetch("/api/config", { headers: auth }).then((r) => (r.ok ? r.json() : {})).catch(() => ({}));
  const pc = new RTCPeerConnection({ iceServers: config.iceServers || [] });
  pc.addTransceiver("video", { direction: "recvonly" });
  pc.ontrack = (ev) => { document.getElementById("output").srcObject = new MediaStream([ev.track]); };
  await pc.setLocalDescription(await pc.createOffer());
  await new Promise((resolve) => {
    if (pc.iceGatheringState === "complete") return resolve();
    pc.addEventListener("icegatheringstatechange", () => pc.iceGatheringState === "complete" && resolve());
    setTimeout(resolve, 2000);
  });
  const headers = Object.assign({ "Content-Type": "application/sdp" }, auth);
  let resp;
  try {
    resp = await fetch(`/whep/${sid}`, { method: "POST", headers, body: pc.localDescription.sdp });
  } catch (err) { return fail(`server unreachable: ${err.message}`); }
  if (resp.status !== 201) {
    const body = await resp.json().catch(() => ({}));
    return fail(body.error || `WHEP failed: HTTP ${resp.status}`);
  }
  const location_ = resp.headers.get("Location");
  await pc.setRemoteDescription({ type: "answer", sdp: await resp.text() });
  window.addEventListener("beforeunload", () => fetch(location_, { method: "DELETE", headers, keepalive: true }));
  pc.onconnectionstatechange = () => { if (pc.connectionState === "failed") fail("connection failed"); };
})();
