//! The core's recording tap: which tracks are recorded, and the Start /
//! Packet / Stop events per publisher, in the deterministic harness.

mod common;

use std::collections::BTreeMap;
use std::time::Duration;

use common::TestNet;
use str0m::format::Codec;
use wisp::sfu::recorder_tap::{RecordEvent, RecordingId};
use wisp::sfu::SfuConfig;

fn recording_net(seed: u64) -> TestNet {
    TestNet::with_config(
        seed,
        SfuConfig {
            record_default: true,
            recording_available: true,
            ..SfuConfig::default()
        },
    )
}

/// Per recording: (kind, codec, packets, stopped).
fn summary(events: &[RecordEvent]) -> BTreeMap<RecordingId, (&'static str, Codec, usize, bool)> {
    let mut m = BTreeMap::new();
    for e in events {
        match e {
            RecordEvent::Start {
                id,
                kind,
                codec,
                room,
                ..
            } => {
                assert_eq!(room.as_str(), "rec");
                assert!(
                    m.insert(*id, (*kind, *codec, 0, false)).is_none(),
                    "one Start per id"
                );
            }
            RecordEvent::Packet { id, .. } => {
                let e = m.get_mut(id).expect("Start before Packet");
                assert!(!e.3, "no Packet after Stop");
                e.2 += 1;
            }
            RecordEvent::Stop { id } => {
                let e = m.get_mut(id).expect("Start before Stop");
                assert!(!e.3, "one Stop per id");
                e.3 = true;
            }
        }
    }
    m
}

#[test]
fn every_publisher_track_is_recorded_and_a_new_publisher_starts_new_files() {
    let mut net = recording_net(40);
    let v = net.view("rec");
    let p1 = net.publish("rec");
    net.run_for(Duration::from_secs(2));
    assert!(net.list_rooms()[0].recording);
    net.delete(p1).unwrap();
    let p2 = net.publish("rec");
    net.run_for(Duration::from_secs(2));
    net.delete(p2).unwrap();
    net.delete(v).unwrap();
    net.run_for(Duration::from_millis(10)); // collect the queued Stop events

    let s = summary(&net.recorded);
    assert_eq!(s.len(), 4, "two tracks per publisher: {s:?}");
    let packets_in = net.stats().rtp_in as usize;
    let recorded: usize = s.values().map(|e| e.2).sum();
    assert_eq!(
        recorded, packets_in,
        "every received packet reaches the recorder"
    );
    for (kind, codec, packets, stopped) in s.values() {
        assert!(*stopped, "file finalised when its publisher left");
        assert!(*packets > 20);
        match *kind {
            "video" => assert_eq!(*codec, Codec::Vp8),
            "audio" => assert_eq!(*codec, Codec::Opus),
            k => panic!("{k}"),
        }
    }
}

#[test]
fn record_override_turns_recording_off_for_one_publish() {
    let mut net = recording_net(41);
    let p = net.publish_opts_record("rec", Some(false));
    net.run_for(Duration::from_secs(1));
    assert!(net.connected(p));
    assert!(net.recorded.is_empty());
    assert!(!net.list_rooms()[0].recording);
}

#[test]
fn recording_is_off_by_default() {
    let mut net = TestNet::new(42);
    net.publish("rec");
    net.run_for(Duration::from_secs(1));
    assert!(net.recorded.is_empty());
}
