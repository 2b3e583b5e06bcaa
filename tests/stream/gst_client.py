"""A WHIP publisher and a WHEP player around GStreamer's webrtcbin, with unmodified webrtcbin offers
(RSA certificate, a=setup:actpass, no trickle). Debian bookworm packages no whipsink/whepsrc, so this
is the ~150 lines such a client takes. Runs under Debian's /usr/bin/python3 (the gi bindings):

  gst_client.py whip URL CLIP SECONDS [TOKEN]      publish CLIP (looped, 320x240 VP8) for SECONDS
  gst_client.py whep URL OUTDIR SECONDS [TOKEN]    play, writing decoded frames as OUTDIR/frame-NNNNN.png

Prints one line per event; exits 0 when media flowed (publisher: connected; player: >= 1 frame)."""

import sys
import urllib.request

import gi

gi.require_version("Gst", "1.0")
gi.require_version("GstWebRTC", "1.0")
gi.require_version("GstSdp", "1.0")
from gi.repository import GLib, Gst, GstSdp, GstWebRTC

Gst.init(None)


def log(*a):
    print(*a, flush=True)


class Client:
    def __init__(self, mode, url, arg, seconds, token=None):
        self.mode, self.url, self.arg, self.token = mode, url, arg, token
        self.loop = GLib.MainLoop()
        self.connected = False
        self.frames = 0
        self.location = None
        if mode == "whip":
            desc = (
                f'filesrc location="{arg}" ! decodebin ! videoconvert ! videoscale ! videorate ! '
                "video/x-raw,width=320,height=240,framerate=30/1 ! vp8enc deadline=1 keyframe-max-dist=30 ! "
                "rtpvp8pay pt=96 ! application/x-rtp,media=video,encoding-name=VP8,payload=96,clock-rate=90000 ! "
                "webrtcbin name=rtc bundle-policy=max-bundle"
            )
            self.pipe = Gst.parse_launch(desc)
            self.rtc = self.pipe.get_by_name("rtc")
        else:  # a lone element: parse_launch would return the element, not a pipeline
            self.pipe = Gst.Pipeline.new("player")
            self.rtc = Gst.ElementFactory.make("webrtcbin", "rtc")
            self.rtc.set_property("bundle-policy", GstWebRTC.WebRTCBundlePolicy.MAX_BUNDLE)
            self.pipe.add(self.rtc)
        if mode == "whep":
            caps = Gst.caps_from_string("application/x-rtp,media=video,encoding-name=VP8,payload=96,clock-rate=90000")
            self.rtc.emit("add-transceiver", GstWebRTC.WebRTCRTPTransceiverDirection.RECVONLY, caps)
            self.rtc.connect("pad-added", self.on_pad)
        self.rtc.connect("on-negotiation-needed", self.on_negotiation_needed)
        self.rtc.connect("notify::ice-gathering-state", self.on_gathering)
        self.rtc.connect("notify::connection-state", self.on_state)
        bus = self.pipe.get_bus()
        bus.add_signal_watch()
        bus.connect("message", self.on_message)
        GLib.timeout_add(int(seconds * 1000), self.finish)

    def on_negotiation_needed(self, _rtc):
        promise = Gst.Promise.new_with_change_func(self.on_offer, None)
        self.rtc.emit("create-offer", None, promise)

    def on_offer(self, promise, _data):
        reply = promise.get_reply()
        offer = reply.get_value("offer") if reply is not None else None
        if offer is None:
            log(f"create-offer failed: {reply.to_string() if reply is not None else 'no reply'}")
            self.loop.quit()
            return
        self.rtc.emit("set-local-description", offer, Gst.Promise.new())

    def on_gathering(self, rtc, _pspec):
        if rtc.get_property("ice-gathering-state") == GstWebRTC.WebRTCICEGatheringState.COMPLETE and not self.location:
            GLib.idle_add(self.post_offer)

    def post_offer(self):
        sdp = self.rtc.get_property("local-description").sdp.as_text()
        headers = {"Content-Type": "application/sdp"}
        if self.token:
            headers["Authorization"] = f"Bearer {self.token}"
        req = urllib.request.Request(self.url, data=sdp.encode(), method="POST", headers=headers)
        try:
            with urllib.request.urlopen(req, timeout=20) as r:
                self.location = r.headers["Location"]
                answer = r.read().decode()
                log(f"POST {r.status} {self.location}")
        except urllib.error.HTTPError as exc:
            log(f"POST failed {exc.code} {exc.read()[:300]!r}")
            self.loop.quit()
            return False
        _, msg = GstSdp.SDPMessage.new_from_text(answer)
        desc = GstWebRTC.WebRTCSessionDescription.new(GstWebRTC.WebRTCSDPType.ANSWER, msg)
        self.rtc.emit("set-remote-description", desc, Gst.Promise.new())
        return False

    def on_state(self, rtc, _pspec):
        state = rtc.get_property("connection-state")
        log(f"connection {state.value_nick}")
        if state == GstWebRTC.WebRTCPeerConnectionState.CONNECTED:
            self.connected = True

    def on_pad(self, _rtc, pad):
        if pad.direction != Gst.PadDirection.SRC:
            return
        tail = Gst.parse_bin_from_description(
            "rtpvp8depay ! vp8dec ! videoconvert ! video/x-raw,format=RGB ! pngenc ! "
            f'multifilesink name=sink location="{self.arg}/frame-%05d.png" post-messages=true',
            True,
        )
        self.pipe.add(tail)
        tail.sync_state_with_parent()
        pad.link(tail.get_static_pad("sink"))

    def on_message(self, _bus, msg):
        if msg.type == Gst.MessageType.EOS:  # the clip ended: loop it
            self.pipe.seek_simple(Gst.Format.TIME, Gst.SeekFlags.FLUSH | Gst.SeekFlags.KEY_UNIT, 0)
        elif msg.type == Gst.MessageType.ERROR:
            err, dbg = msg.parse_error()
            log(f"error {err.message} {dbg}")
            self.loop.quit()
        elif msg.type == Gst.MessageType.ELEMENT and msg.get_structure().get_name() == "GstMultiFileSink":
            self.frames += 1
            if self.frames in (1, 30):
                log(f"frames {self.frames}")

    def finish(self):
        self.loop.quit()
        return False

    def run(self):
        self.pipe.set_state(Gst.State.PLAYING)
        self.loop.run()
        if self.location:  # end the resource as WHIP/WHEP clients do
            base = self.url.split("/whip")[0].split("/whep")[0]
            headers = {"Authorization": f"Bearer {self.token}"} if self.token else {}
            req = urllib.request.Request(base + self.location, method="DELETE", headers=headers)
            try:
                with urllib.request.urlopen(req, timeout=10) as r:
                    log(f"DELETE {r.status}")
            except urllib.error.HTTPError as exc:
                log(f"DELETE {exc.code}")
        self.pipe.set_state(Gst.State.NULL)
        ok = self.connected and (self.mode == "whip" or self.frames > 0)
        log(f"done connected={self.connected} frames={self.frames}")
        return 0 if ok else 1


if __name__ == "__main__":
    mode, url, arg, seconds = sys.argv[1], sys.argv[2], sys.argv[3], float(sys.argv[4])
    sys.exit(Client(mode, url, arg, seconds, sys.argv[5] if len(sys.argv) > 5 else None).run())
