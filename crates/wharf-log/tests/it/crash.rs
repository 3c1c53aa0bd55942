//! Kill a process that appends with the default flush policy at random moments, and
//! check that every batch it saw acknowledged survives, intact, at its offset.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use rand::Rng;
use wharf_log::{LogConfig, SharedLog};

use crate::common::split;

#[path = "../../src/bin/wharf-log-crash-appender.rs"]
#[allow(dead_code)]
mod appender;

#[test]
fn acked_batches_survive_sigkill() {
    let dir = tempfile::tempdir().expect("tempdir");
    let exe = env!("CARGO_BIN_EXE_wharf-log-crash-appender");
    let mut rng = rand::rng();
    // offset -> seed of every acknowledged batch, over all rounds.
    let mut acked: BTreeMap<u64, u64> = BTreeMap::new();
    let rounds = 50;
    let mut child_acks = 0usize;
    for round in 0..rounds {
        let mut child = Command::new(exe)
            .arg(dir.path())
            .arg("4")
            .arg((round as u64 * 1_000_000).to_string())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("spawn appender");
        let stdout = child.stdout.take().expect("stdout");
        let reader = std::thread::spawn(move || {
            let mut lines = Vec::new();
            for line in BufReader::new(stdout).lines() {
                match line {
                    Ok(l) => lines.push(l),
                    Err(_) => break,
                }
            }
            lines
        });
        // Kill at a random moment, sometimes before the first ack, mostly mid-stream.
        std::thread::sleep(Duration::from_millis(rng.random_range(1..120)));
        child.kill().expect("SIGKILL");
        let status = child.wait().expect("wait");
        assert!(!status.success(), "appender exited by itself: {status}");
        let lines = reader.join().expect("reader");
        for l in &lines {
            let parts: Vec<&str> = l.split(' ').collect();
            // A line cut by the kill is incomplete; it was not an acknowledgement we saw.
            if parts.len() == 4 && parts[0] == "ack" {
                if let (Ok(base), Ok(seed)) = (parts[1].parse::<u64>(), parts[3].parse::<u64>()) {
                    acked.insert(base, seed);
                    child_acks += 1;
                }
            }
        }

        let started = Instant::now();
        let log = SharedLog::open(
            dir.path(),
            LogConfig {
                segment_bytes: 256 * 1024,
                ..LogConfig::default()
            },
        )
        .expect("reopen after SIGKILL");
        let stored: BTreeMap<u64, Vec<u8>> = split(&log.read(0, usize::MAX).expect("read").bytes)
            .into_iter()
            .collect();
        // Offsets are contiguous: each batch starts where the previous ended.
        let mut next = 0;
        for (base, bytes) in &stored {
            assert_eq!(*base, next, "round {round}: gap before offset {base}");
            let (h, _) = wharf_log::batch::validate(bytes).expect("valid");
            next = h.last_offset() as u64 + 1;
        }
        assert_eq!(log.log_end_offset(), next);
        for (base, seed) in &acked {
            let mut expect = appender::crash_batch(*seed);
            wharf_log::batch::set_base_offset(&mut expect, *base as i64);
            let got = stored.get(base);
            assert!(
                got == Some(&expect),
                "round {round}: acknowledged batch at offset {base} (seed {seed}) lost or damaged"
            );
        }
        // Appends continue at the log end.
        let end = log.log_end_offset();
        let mut b = appender::crash_batch(u64::MAX - round as u64);
        let info = log.append(&mut b).expect("append after recovery");
        assert_eq!(info.base_offset, end, "round {round}");
        acked.insert(info.base_offset, u64::MAX - round as u64);
        drop(log);
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "recovery took {:?}",
            started.elapsed()
        );
    }
    // Most rounds must have acknowledged appends, or the test proves little.
    assert!(
        child_acks >= rounds,
        "the appender barely ran: {child_acks} acks in {rounds} rounds"
    );
    eprintln!("{child_acks} acknowledged batches checked across {rounds} SIGKILLs");
}
