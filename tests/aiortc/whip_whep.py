"""An aiortc publisher (WHIP) and an aiortc viewer (WHEP) through wisp.

Driven by tests/aiortc_interop.rs, which starts the wisp binary and passes
its HTTP address. The publisher sends VP8 video (320x240 at 30 fps, a moving
bar, from a VideoStreamTrack) and Opus audio (AudioStreamTrack silence); the
viewer counts the video frames its decoder hands out within `--seconds`.
`--setup passive` sends the offers with `a=setup:passive`, as FFmpeg's WHIP
muxer does, so wisp is the DTLS client and aiortc's OpenSSL the server
(`--srtp sha1_80` also limits SRTP to FFmpeg's one profile);
`--setup active` makes wisp the server of a client that asked to be one.
Prints one JSON line with what happened and exits 0 when the viewer decoded
at least `--frames` frames, 1 otherwise. Every wait is bounded.

aioice leaves 127.0.0.1 out of its host candidates (`get_host_addresses` in
aioice/ice.py); like Chromium's --allow-loopback-in-peer-connection, the
script puts loopback back, so the test needs no network namespace.
"""

import argparse
import asyncio
import json
import sys
import time
import urllib.error
import urllib.request

import aioice.ice
from av import VideoFrame

from aiortc import (
    RTCConfiguration,
    RTCPeerConnection,
    RTCSessionDescription,
    VideoStreamTrack,
)
from aiortc.mediastreams import AudioStreamTrack, MediaStreamError
from aiortc.rtcdtlstransport import SRTP_AES128_CM_SHA1_80, SRTP_PROFILES

aioice.ice.get_host_addresses = lambda use_ipv4, use_ipv6: ["127.0.0.1"]

WIDTH, HEIGHT = 320, 240
DUMP = False
SETUP = "actpass"


class MovingBar(VideoStreamTrack):
    """320x240 I420 frames with a white bar that moves 4 pixels a frame."""

    def __init__(self):
        super().__init__()
        self.n = 0

    async def recv(self):
        pts, time_base = await self.next_timestamp()
        frame = VideoFrame(width=WIDTH, height=HEIGHT, format="yuv420p")
        y, u, v = frame.planes
        x0 = (self.n * 4) % (WIDTH - 32)
        row = bytes([40]) * x0 + bytes([235]) * 32 + bytes([40]) * (WIDTH - 32 - x0)
        row += bytes(y.line_size - WIDTH)
        y.update(row * HEIGHT)
        u.update(bytes([128]) * u.buffer_size)
        v.update(bytes([128]) * v.buffer_size)
        frame.pts = pts
        frame.time_base = time_base
        self.n += 1
        return frame


def post_sdp(url, sdp):
    """POST an offer; returns (status, location, answer body)."""
    req = urllib.request.Request(
        url,
        data=sdp.encode(),
        method="POST",
        headers={"Content-Type": "application/sdp"},
    )
    try:
        with urllib.request.urlopen(req, timeout=5) as r:
            return r.status, r.headers.get("Location"), r.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, None, e.read().decode(errors="replace")


def delete(base, location):
    req = urllib.request.Request(base + location, method="DELETE")
    try:
        with urllib.request.urlopen(req, timeout=5) as r:
            return r.status
    except urllib.error.HTTPError as e:
        return e.code


async def negotiate(pc, url, report, who):
    offer = await pc.createOffer()
    # setLocalDescription gathers every candidate (aiortc does not trickle),
    # so localDescription carries them all and a=end-of-candidates.
    await pc.setLocalDescription(offer)
    sdp = pc.localDescription.sdp
    if SETUP != "actpass":
        # Sent as another client would write it; aiortc takes its DTLS role
        # from the answer (active -> server, passive -> client) all the same.
        sdp = sdp.replace("a=setup:actpass", f"a=setup:{SETUP}")
    status, location, body = await asyncio.to_thread(post_sdp, url, sdp)
    report[who] = {"status": status, "location": location}
    if DUMP:
        print(f"--- {who} offer\n{sdp}--- {who} answer ({status})\n{body}", file=sys.stderr)
    if status != 201:
        report[who]["offer"] = sdp
        report[who]["error"] = body
        raise RuntimeError(f"{who}: POST {url} -> {status}: {body}")
    lines = body.splitlines()
    report[who]["answer_setup"] = [l for l in lines if l.startswith("a=setup:")][:1]
    report[who]["answer_directions"] = [
        l[2:] for l in lines if l in ("a=sendrecv", "a=sendonly", "a=recvonly", "a=inactive")
    ]
    await pc.setRemoteDescription(RTCSessionDescription(sdp=body, type="answer"))
    return location


def dtls_summary(pc):
    """Version, cipher suite and SRTP profile of the (bundled) DTLS transport."""
    ssl = pc.getTransceivers()[0].receiver.transport._ssl
    srtp = ssl.get_selected_srtp_profile()
    return {
        "version": ssl.get_protocol_version_name(),
        "cipher": ssl.get_cipher_name(),
        "srtp": srtp.decode() if srtp else None,
    }


async def count_frames(track, deadline, frames, sizes):
    """Decoded frames of `track` until `deadline` (a time.monotonic() value)."""
    while True:
        left = deadline - time.monotonic()
        if left <= 0:
            return
        try:
            frame = await asyncio.wait_for(track.recv(), timeout=left)
        except (asyncio.TimeoutError, MediaStreamError):
            return
        frames.append(frame.pts)
        if hasattr(frame, "width"):
            sizes.add((frame.width, frame.height))


async def run(args):
    base = args.url.rstrip("/")
    report = {"frames": 0, "audio_frames": 0}
    config = RTCConfiguration(iceServers=[])
    publisher = RTCPeerConnection(config)
    viewer = RTCPeerConnection(config)
    video, audio, sizes = [], [], set()
    tasks = []
    try:
        publisher.addTrack(AudioStreamTrack())
        publisher.addTrack(MovingBar())
        pub_loc = await negotiate(publisher, f"{base}/whip/{args.room}", report, "publisher")

        viewer.addTransceiver("audio", direction="recvonly")
        viewer.addTransceiver("video", direction="recvonly")
        start = time.monotonic()
        deadline = start + args.seconds

        @viewer.on("track")
        def on_track(track):
            out = video if track.kind == "video" else audio
            tasks.append(asyncio.ensure_future(count_frames(track, deadline, out, sizes)))

        view_loc = await negotiate(viewer, f"{base}/whep/{args.room}", report, "viewer")
        while time.monotonic() < deadline and len(video) < args.frames:
            await asyncio.sleep(0.1)
        report["seconds"] = round(time.monotonic() - start, 2)
        report["frames"] = len(video)
        report["audio_frames"] = len(audio)
        report["sizes"] = sorted(sizes)
        report["publisher_state"] = publisher.connectionState
        report["viewer_state"] = viewer.connectionState
        report["publisher_dtls"] = dtls_summary(publisher)
        report["viewer_dtls"] = dtls_summary(viewer)
        report["delete"] = [
            await asyncio.to_thread(delete, base, pub_loc),
            await asyncio.to_thread(delete, base, view_loc),
        ]
    except Exception as e:  # reported, never swallowed: the exit code says it
        report["exception"] = f"{type(e).__name__}: {e}"
    finally:
        for t in tasks:
            t.cancel()
        await asyncio.wait_for(publisher.close(), 5)
        await asyncio.wait_for(viewer.close(), 5)
    return report


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--url", required=True, help="wisp's HTTP base, e.g. http://127.0.0.1:8080")
    p.add_argument("--room", default="aiortc")
    p.add_argument("--seconds", type=float, default=8.0)
    p.add_argument("--frames", type=int, default=60)
    p.add_argument("--dump", action="store_true", help="print offers and answers to stderr")
    p.add_argument(
        "--setup",
        choices=["actpass", "active", "passive"],
        default="actpass",
        help="a=setup written in the offers sent (aiortc itself writes actpass)",
    )
    p.add_argument(
        "--srtp",
        choices=["all", "sha1_80"],
        default="all",
        help="SRTP profiles offered: aiortc's (GCM first) or AES128_CM_SHA1_80 only",
    )
    args = p.parse_args()
    global DUMP, SETUP
    DUMP = args.dump
    SETUP = args.setup
    if args.srtp == "sha1_80":
        # Every DTLS transport reads this list: offer only what FFmpeg does.
        SRTP_PROFILES[:] = [SRTP_AES128_CM_SHA1_80]
    report = asyncio.run(asyncio.wait_for(run(args), args.seconds + 20))
    print(json.dumps(report), flush=True)
    ok = "exception" not in report and report["frames"] >= args.frames
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
