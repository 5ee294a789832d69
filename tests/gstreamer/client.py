#!/usr/bin/python3
"""GStreamer clients for tests/gstreamer_interop.rs (Debian 12, GStreamer 1.22).

Modes:
  whip URL --codec vp8|h264 [--setup S]   webrtcbin publisher: test pattern and tone
  whep URL --codec vp8|h264 [--setup S]   webrtcbin viewer: decodes and counts frames
  encode OUT --codec vp8|h264 --frames N  an IVF file of N encoded frames (30 fps)
  decode FILE --codec vp8|h264            decodes an IVF (VP8) or Annex B (H.264) file
  check                                   exits 1, listing them, if elements are missing

WHIP and WHEP over plain HTTP: one POST of the offer after ICE gathering has
completed (no trickle), the answer from the 201, a DELETE of the Location at
the end. `--setup` rewrites the offer's `a=setup:actpass` before it is sent
(webrtcbin's own description keeps actpass), so the peer takes the other DTLS
role; webrtcbin follows the answer.

Reports are JSON lines on stdout. The client stops when stdin closes, at
`--seconds`, or (whep) after `--frames` decoded frames; every wait is bounded.
"""

import argparse
import json
import os
import struct
import sys
import threading
import time
import urllib.error
import urllib.parse
import urllib.request

import gi

gi.require_version("Gst", "1.0")
gi.require_version("GstSdp", "1.0")
gi.require_version("GstWebRTC", "1.0")
from gi.repository import GLib, Gst, GstSdp, GstWebRTC  # noqa: E402

HTTP_TIMEOUT = 10
GATHER_LIMIT = 5.0

# x264enc threads=1: one slice per picture. rtph264pay's config-interval=-1
# puts SPS/PPS before every IDR slice, so h264parse would cut a two-slice
# keyframe into two pictures and the decoded count would not match the frames.
VIDEO = {
    "vp8": {
        "enc": "vp8enc deadline=1 cpu-used=8 keyframe-max-dist=30 target-bitrate=400000 "
        "error-resilient=default lag-in-frames=0",
        "pay": "rtpvp8pay pt=96 picture-id-mode=15-bit",
        "caps": "application/x-rtp,media=video,encoding-name=VP8,payload=96,clock-rate=90000",
        "depay": "rtpvp8depay",
        "dec": "vp8dec",
    },
    "h264": {
        "enc": "x264enc tune=zerolatency speed-preset=ultrafast threads=1 key-int-max=30 bitrate=400 "
        "aud=true ! video/x-h264,profile=constrained-baseline,stream-format=byte-stream",
        "pay": "rtph264pay pt=102 config-interval=-1 aggregate-mode=zero-latency",
        "caps": "application/x-rtp,media=video,encoding-name=H264,payload=102,clock-rate=90000,"
        "packetization-mode=(string)1,profile-level-id=(string)42e01f",
        "depay": "rtph264depay",
        "dec": "h264parse ! avdec_h264",
    },
}
AUDIO_CAPS = (
    "application/x-rtp,media=audio,encoding-name=OPUS,payload=111,clock-rate=48000,"
    "encoding-params=(string)2"
)
RAW = "video/x-raw,width=320,height=240,framerate=30/1"


def report(**kv):
    kv["t"] = round(time.monotonic() - START, 3)
    sys.stdout.write(json.dumps(kv) + "\n")
    sys.stdout.flush()


def fail(why):
    global FAILED
    FAILED = True
    report(event="error", error=why)
    if LOOP.is_running():
        LOOP.quit()


START = time.monotonic()
FAILED = False
LOOP = GLib.MainLoop()


class Client:
    def __init__(self, args):
        self.args = args
        self.location = None
        self.posted = False
        self.frames = 0
        self.first_frame = None
        self.candidates = []  # (mline, line) from on-ice-candidate
        self.pipe = None
        self.webrtc = None
        self.trans = []

    # ---- pipeline ----

    def build(self):
        a = self.args
        v = VIDEO[a.codec]
        if a.mode == "whip":
            desc = (
                "webrtcbin name=webrtc bundle-policy=max-bundle "
                f"videotestsrc is-live=true pattern=ball ! {RAW} ! videoconvert ! {v['enc']} ! "
                f"{v['pay']} ! {v['caps']} ! webrtc. "
                "audiotestsrc is-live=true wave=sine ! audioconvert ! audioresample ! "
                "opusenc ! rtpopuspay pt=111 ! "
                "application/x-rtp,media=audio,encoding-name=OPUS,payload=111 ! webrtc. "
            )
        else:
            desc = "webrtcbin name=webrtc bundle-policy=max-bundle fakesrc num-buffers=0 ! fakesink"
        self.pipe = Gst.parse_launch(desc)
        self.webrtc = self.pipe.get_by_name("webrtc")
        w = self.webrtc
        if a.mode == "whip":
            self.trans = [p.get_property("transceiver") for p in w.sinkpads]
            for t in self.trans:
                t.set_property("direction", GstWebRTC.WebRTCRTPTransceiverDirection.SENDONLY)
        else:
            recv = GstWebRTC.WebRTCRTPTransceiverDirection.RECVONLY
            self.trans = [
                w.emit("add-transceiver", recv, Gst.Caps.from_string(AUDIO_CAPS)),
                w.emit("add-transceiver", recv, Gst.Caps.from_string(v["caps"])),
            ]
            w.connect("pad-added", self.on_pad)
        w.connect("on-negotiation-needed", self.on_negotiation_needed)
        w.connect("on-ice-candidate", lambda _w, m, c: self.candidates.append((m, c)))
        w.connect("notify::ice-gathering-state", self.on_gathering)
        for p in ("ice-connection-state", "connection-state"):
            w.connect("notify::" + p, self.on_state)
        bus = self.pipe.get_bus()
        bus.add_signal_watch()
        bus.connect("message::error", self.on_error)
        self.pipe.set_state(Gst.State.PLAYING)

    def transceivers(self):
        return self.trans

    def on_error(self, _bus, msg):
        err, dbg = msg.parse_error()
        fail(f"{msg.src.get_name()}: {err.message} ({dbg})")

    def on_state(self, w, _pspec):
        report(
            event="state",
            ice=w.get_property("ice-connection-state").value_nick,
            pc=w.get_property("connection-state").value_nick,
            dtls=self.dtls(),
        )

    def dtls(self):
        """The DTLS role and state of the (bundled) transport, once there is one."""
        for t in self.transceivers():
            tr = t.get_property("receiver").get_property("transport")
            if tr is None:
                tr = t.get_property("sender").get_property("transport")
            if tr is not None:
                return {"client": tr.get_property("client"), "state": tr.get_property("state").value_nick}
        return None

    # ---- offer, gathering, POST ----

    def on_negotiation_needed(self, w):
        if not self.posted:
            GLib.idle_add(self.offer_when_caps, time.monotonic() + GATHER_LIMIT)

    def offer_when_caps(self, deadline):
        """Create the offer once media flows into every sink pad: webrtcbin then
        writes the stream's own caps (H.264 profile-level-id, packetization-mode)."""
        pads = list(self.webrtc.sinkpads)
        if any(p.get_current_caps() is None for p in pads) and time.monotonic() < deadline:
            GLib.timeout_add(50, self.offer_when_caps, deadline)
            return False
        promise = Gst.Promise.new_with_change_func(self.on_offer, self.webrtc, None)
        self.webrtc.emit("create-offer", None, promise)
        return False

    def on_offer(self, promise, w, _data):
        reply = promise.get_reply()
        offer = reply.get_value("offer") if reply else None
        if offer is None:
            GLib.idle_add(fail, f"create-offer failed: {reply}")
            return
        w.emit("set-local-description", offer, Gst.Promise.new())
        report(event="local_description")
        GLib.timeout_add(int(GATHER_LIMIT * 1000), self.gathered, "timeout")

    def on_gathering(self, w, _pspec):
        if w.get_property("ice-gathering-state") == GstWebRTC.WebRTCICEGatheringState.COMPLETE:
            GLib.idle_add(self.gathered, "complete")

    def gathered(self, how):
        if self.posted:
            return False
        self.posted = True
        sdp = self.webrtc.get_property("local-description").sdp.as_text()
        if "a=candidate" not in sdp:
            sdp = with_candidates(sdp, self.candidates)
        sent = sdp
        if self.args.setup != "actpass":
            sent = sdp.replace("a=setup:actpass", "a=setup:" + self.args.setup)
        report(
            event="offer",
            gathering=how,
            setup=[l for l in sent.splitlines() if l.startswith("a=setup:")],
            candidates=[l for l in sent.splitlines() if l.startswith("a=candidate")],
        )
        if self.args.show_sdp:
            sys.stderr.write("---- offer sent\n" + sent)
        req = urllib.request.Request(
            self.args.url,
            data=sent.encode(),
            method="POST",
            headers={"Content-Type": "application/sdp"},
        )
        try:
            with urllib.request.urlopen(req, timeout=HTTP_TIMEOUT) as r:
                status, loc, answer = r.status, r.headers.get("Location"), r.read().decode()
        except urllib.error.HTTPError as e:
            fail(f"POST {e.code}: {e.read().decode(errors='replace')}")
            return False
        except OSError as e:
            fail(f"POST: {e}")
            return False
        if status != 201 or not loc:
            fail(f"POST answered {status}, Location {loc!r}")
            return False
        self.location = urllib.parse.urljoin(self.args.url, loc)
        if self.args.show_sdp:
            sys.stderr.write("---- answer\n" + answer)
        report(
            event="answer",
            status=status,
            location=self.location,
            setup=[l for l in answer.splitlines() if l.startswith("a=setup:")],
        )
        ok, msg = GstSdp.SDPMessage.new_from_text(answer)
        if ok != GstSdp.SDPResult.OK:
            fail("the answer does not parse")
            return False
        desc = GstWebRTC.WebRTCSessionDescription.new(GstWebRTC.WebRTCSDPType.ANSWER, msg)
        self.webrtc.emit("set-remote-description", desc, Gst.Promise.new())
        return False

    def delete(self):
        if not self.location:
            return
        req = urllib.request.Request(self.location, method="DELETE")
        try:
            with urllib.request.urlopen(req, timeout=HTTP_TIMEOUT) as r:
                report(event="deleted", status=r.status)
        except urllib.error.HTTPError as e:
            report(event="deleted", status=e.code)
        except OSError as e:
            report(event="deleted", error=str(e))

    # ---- viewer: decode and count ----

    def on_pad(self, _w, pad):
        if pad.get_direction() != Gst.PadDirection.SRC:
            return
        caps = pad.get_current_caps() or pad.query_caps(None)
        media = caps.get_structure(0).get_string("media")
        if media == "video":
            v = VIDEO[self.args.codec]
            desc = f"queue ! {v['depay']} ! {v['dec']} name=dec ! fakesink sync=false async=false"
        else:
            desc = "queue ! fakesink sync=false async=false"
        bin_ = Gst.parse_bin_from_description(desc, True)
        self.pipe.add(bin_)
        bin_.sync_state_with_parent()
        pad.link(bin_.get_static_pad("sink"))
        if media == "video":
            dec = bin_.get_by_name("dec")
            dec.get_static_pad("src").add_probe(Gst.PadProbeType.BUFFER, self.on_frame)
        report(event="track", media=media, caps=caps.to_string())

    def on_frame(self, _pad, _info):
        self.frames += 1
        if self.first_frame is None:
            self.first_frame = time.monotonic()
            GLib.idle_add(lambda: report(event="first_frame") and False)
        return Gst.PadProbeReturn.OK

    def tick(self):
        if self.args.mode == "whep":
            since = None if self.first_frame is None else round(time.monotonic() - self.first_frame, 3)
            report(event="frames", decoded=self.frames, since_first=since)
            if self.frames >= self.args.frames:
                LOOP.quit()
                return False
        return True


def with_candidates(sdp, candidates):
    """Put the candidates gathered through on-ice-candidate into their m-sections."""
    out, mline = [], -1
    lines = sdp.rstrip("\r\n").split("\r\n")
    for i, line in enumerate(lines):
        out.append(line)
        if line.startswith("m="):
            mline += 1
        nxt = lines[i + 1] if i + 1 < len(lines) else "m="
        if mline >= 0 and nxt.startswith("m="):
            out += ["a=" + c for m, c in candidates if m == mline]
            out.append("a=end-of-candidates")
    return "\r\n".join(out) + "\r\n"


def watch_stdin():
    """Stop when the test closes our stdin (or goes away)."""
    try:
        sys.stdin.read()
    finally:
        GLib.idle_add(lambda: LOOP.quit() and False)


def run_session(args):
    c = Client(args)
    c.build()
    GLib.timeout_add(250, c.tick)
    GLib.timeout_add(int(args.seconds * 1000), lambda: LOOP.quit() and False)
    threading.Thread(target=watch_stdin, daemon=True).start()
    LOOP.run()
    if args.mode == "whep":
        report(event="frames", decoded=c.frames)
    report(event="final", dtls=c.dtls(), pc=c.webrtc.get_property("connection-state").value_nick)
    c.delete()
    c.pipe.set_state(Gst.State.NULL)
    sys.stdout.flush()
    # Skip interpreter teardown: finalising GObjects after the pipeline is
    # gone only prints GLib warnings.
    os._exit(1 if FAILED else 0)


# ---- files ----


def encode(args):
    """N frames of the test pattern, encoded, in an IVF file (fourcc VP80 or H264)."""
    v = VIDEO[args.codec]
    enc = v["enc"]
    if args.codec == "h264":
        enc += ",alignment=au"
    pipe = Gst.parse_launch(
        f"videotestsrc num-buffers={args.frames} pattern=ball ! {RAW} ! videoconvert ! {enc} ! "
        "appsink name=out sync=false emit-signals=false"
    )
    sink = pipe.get_by_name("out")
    pipe.set_state(Gst.State.PLAYING)
    frames = []
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        s = sink.emit("try-pull-sample", Gst.SECOND)
        if s is None:
            if sink.get_property("eos"):
                break
            continue
        buf = s.get_buffer()
        frames.append(buf.extract_dup(0, buf.get_size()))
    pipe.set_state(Gst.State.NULL)
    fourcc = b"VP80" if args.codec == "vp8" else b"H264"
    with open(args.file, "wb") as f:
        f.write(b"DKIF" + struct.pack("<HH4sHHIIII", 0, 32, fourcc, 320, 240, 30, 1, len(frames), 0))
        for i, fr in enumerate(frames):
            f.write(struct.pack("<IQ", len(fr), i) + fr)
    report(event="encoded", frames=len(frames))
    return 0 if len(frames) == args.frames else 1


def decode(args):
    """Decode a file and count the frames the decoder puts out."""
    if args.codec == "vp8":
        desc = f"filesrc location={args.file} ! ivfparse ! vp8dec name=dec ! fakesink sync=false"
    else:
        desc = f"filesrc location={args.file} ! h264parse ! avdec_h264 name=dec ! fakesink sync=false"
    pipe = Gst.parse_launch(desc)
    n = [0]

    def count(_p, _i):
        n[0] += 1
        return Gst.PadProbeReturn.OK

    pipe.get_by_name("dec").get_static_pad("src").add_probe(Gst.PadProbeType.BUFFER, count)
    pipe.set_state(Gst.State.PLAYING)
    msg = pipe.get_bus().timed_pop_filtered(30 * Gst.SECOND, Gst.MessageType.EOS | Gst.MessageType.ERROR)
    pipe.set_state(Gst.State.NULL)
    if msg is None:
        report(event="decoded", frames=n[0], error="no EOS within 30 s")
        return 1
    if msg.type == Gst.MessageType.ERROR:
        err, dbg = msg.parse_error()
        report(event="decoded", frames=n[0], error=f"{err.message} ({dbg})")
        return 1
    report(event="decoded", frames=n[0])
    return 0


ELEMENTS = (
    "webrtcbin nicesrc nicesink dtlssrtpenc srtpenc videotestsrc audiotestsrc videoconvert "
    "audioconvert audioresample vp8enc vp8dec x264enc h264parse avdec_h264 opusenc "
    "rtpvp8pay rtpvp8depay rtph264pay rtph264depay rtpopuspay ivfparse appsink fakesink"
)


def check():
    missing = [e for e in ELEMENTS.split() if Gst.ElementFactory.find(e) is None]
    print(" ".join(missing))
    return 1 if missing else 0


def main():
    p = argparse.ArgumentParser()
    p.add_argument("mode", choices=["whip", "whep", "encode", "decode", "check"])
    p.add_argument("url", nargs="?", help="WHIP/WHEP endpoint, or the file to write or read")
    p.add_argument("--codec", choices=["vp8", "h264"], default="vp8")
    p.add_argument("--setup", choices=["actpass", "active", "passive"], default="actpass")
    p.add_argument("--seconds", type=float, default=20.0, help="hard limit of a session")
    p.add_argument("--frames", type=int, default=60, help="whep: stop after this many; encode: how many")
    p.add_argument("--show-sdp", action="store_true")
    args = p.parse_args()
    Gst.init(None)
    if args.mode == "check":
        sys.exit(check())
    if args.mode in ("encode", "decode"):
        args.file = args.url
        sys.exit(encode(args) if args.mode == "encode" else decode(args))
    run_session(args)


if __name__ == "__main__":
    main()
