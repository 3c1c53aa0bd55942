//! The topic registry: which topics exist, their ids, partition counts and overrides,
//! persisted in `<data-dir>/topics.json`.
//!
//! ```text
//! {
//!   "format": 1,
//!   "topics": [
//!     { "name": "orders", "id": "6f1c…", "partitions": 3,
//!       "configs": { "retention.ms": "86400000" } }
//!   ]
//! }
//! ```
//!
//! Every change is written whole to `topics.json.tmp`, fsync'd, renamed over
//! `topics.json`, and the directory fsync'd. The rename is the commit point: a crash
//! before it leaves the old file intact (and a stale `.tmp`, ignored and replaced next
//! time); a crash after it leaves the new file. The file is small (one entry per topic)
//! and changes only on admin operations, so a whole rewrite is cheaper than a journal.
//!
//! Each mutation builds the new state, persists it, and only then swaps it in, so a
//! failed write leaves memory and disk agreeing on the old state.

use std::collections::BTreeMap;
use std::fs::{self, File};
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::error::{CoreError, IoContext, Result};
use crate::topic::{canonical_overrides, ConfigOp, NewTopic, TopicName, MAX_PARTITIONS};

/// File name of the registry inside the data directory.
pub const REGISTRY_FILE: &str = "topics.json";
const REGISTRY_TMP: &str = "topics.json.tmp";
/// Version of the `topics.json` layout. Bump it on any incompatible change and keep
/// reading the old one.
pub const REGISTRY_FORMAT: u32 = 1;

/// One topic as persisted.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TopicRecord {
    /// The topic's name.
    pub name: TopicName,
    /// Its id, fresh for every creation.
    pub id: Uuid,
    /// Number of partitions.
    pub partitions: u32,
    /// Overrides of the broker defaults, canonical form.
    #[serde(default)]
    pub configs: BTreeMap<String, String>,
}

#[derive(Serialize, Deserialize)]
struct RegistryFile {
    format: u32,
    topics: Vec<TopicRecord>,
}

/// The set of topics, persisted crash-safely. Owned by the [`crate::Broker`]; public so
/// tools and tests can read a data directory's registry without starting a broker.
#[derive(Debug)]
pub struct TopicRegistry {
    dir: PathBuf,
    topics: BTreeMap<TopicName, TopicRecord>,
    existed: bool,
}

fn validate_partitions(topic: &str, count: u32) -> Result<()> {
    if count == 0 || count > MAX_PARTITIONS {
        return Err(CoreError::InvalidPartitions {
            topic: topic.into(),
            count,
            reason: format!("a topic has 1 to {MAX_PARTITIONS} partitions"),
        });
    }
    Ok(())
}

impl TopicRegistry {
    /// Loads `<dir>/topics.json`; a missing file is an empty registry. A file that cannot
    /// be read as a registry is [`CoreError::CorruptRegistry`], never a panic and never a
    /// silently empty registry.
    pub fn load(dir: &Path) -> Result<TopicRegistry> {
        let path = dir.join(REGISTRY_FILE);
        let bytes = match fs::read(&path) {
            Ok(b) => b,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                return Ok(TopicRegistry {
                    dir: dir.to_path_buf(),
                    topics: BTreeMap::new(),
                    existed: false,
                })
            }
            Err(e) => return Err(e).ctx("read", &path),
        };
        let corrupt = |reason: String| CoreError::CorruptRegistry {
            path: path.clone(),
            reason,
        };
        let file: RegistryFile =
            serde_json::from_slice(&bytes).map_err(|e| corrupt(e.to_string()))?;
        if file.format != REGISTRY_FORMAT {
            return Err(corrupt(format!(
                "format version {} is not supported (this wharf reads version {REGISTRY_FORMAT})",
                file.format
            )));
        }
        let mut topics = BTreeMap::new();
        let mut ids = std::collections::HashSet::new();
        for t in file.topics {
            validate_partitions(t.name.as_str(), t.partitions)
                .map_err(|e| corrupt(e.to_string()))?;
            canonical_overrides(&t.configs)
                .map_err(|e| corrupt(format!("topic {:?}: {e}", t.name.as_str())))?;
            if !ids.insert(t.id) {
                return Err(corrupt(format!("topic id {} appears twice", t.id)));
            }
            if topics.contains_key(&t.name) {
                return Err(corrupt(format!(
                    "topic {:?} appears twice",
                    t.name.as_str()
                )));
            }
            topics.insert(t.name.clone(), t);
        }
        Ok(TopicRegistry {
            dir: dir.to_path_buf(),
            topics,
            existed: true,
        })
    }

    /// Path of the registry file.
    pub fn path(&self) -> PathBuf {
        self.dir.join(REGISTRY_FILE)
    }

    /// Whether `topics.json` existed when loaded (or has been written since).
    pub fn existed(&self) -> bool {
        self.existed
    }

    /// The topic called `name`.
    pub fn get(&self, name: &str) -> Option<&TopicRecord> {
        // Names in the map are valid, so an invalid `name` simply is not there.
        TopicName::new(name).ok().and_then(|n| self.topics.get(&n))
    }

    /// All topics, by name.
    pub fn topics(&self) -> impl Iterator<Item = &TopicRecord> {
        self.topics.values()
    }

    /// Number of topics.
    pub fn len(&self) -> usize {
        self.topics.len()
    }

    /// Whether there are no topics.
    pub fn is_empty(&self) -> bool {
        self.topics.is_empty()
    }

    /// Validates and persists a new topic with a fresh id.
    pub fn create(&mut self, new: &NewTopic) -> Result<TopicRecord> {
        let name = TopicName::new(new.name.clone())?;
        validate_partitions(name.as_str(), new.partitions)?;
        let configs = canonical_overrides(&new.configs)?;
        if self.topics.contains_key(&name) {
            return Err(CoreError::TopicExists {
                name: new.name.clone(),
            });
        }
        let record = TopicRecord {
            name: name.clone(),
            id: Uuid::new_v4(),
            partitions: new.partitions,
            configs,
        };
        let mut next = self.topics.clone();
        next.insert(name, record.clone());
        self.commit(next)?;
        Ok(record)
    }

    /// Removes a topic and persists the removal.
    pub fn delete(&mut self, name: &str) -> Result<TopicRecord> {
        let record = self.require(name)?.clone();
        let mut next = self.topics.clone();
        next.remove(&record.name);
        self.commit(next)?;
        Ok(record)
    }

    /// Applies config changes (all or none) and persists them.
    pub fn alter_config(&mut self, name: &str, ops: &[ConfigOp]) -> Result<TopicRecord> {
        let mut record = self.require(name)?.clone();
        for op in ops {
            match op {
                ConfigOp::Set { key, value } => {
                    record.configs.insert(key.clone(), value.clone());
                }
                ConfigOp::Delete { key } => {
                    // Validates the key: deleting an unknown key is an error, not a no-op.
                    if crate::topic::TopicConfig::default().get(key).is_none() {
                        return Err(CoreError::UnknownConfig {
                            key: key.clone(),
                            supported: crate::topic::TOPIC_CONFIG_KEYS.join(", "),
                        });
                    }
                    record.configs.remove(key);
                }
            }
        }
        record.configs = canonical_overrides(&record.configs)?;
        let mut next = self.topics.clone();
        next.insert(record.name.clone(), record.clone());
        self.commit(next)?;
        Ok(record)
    }

    /// Raises a topic's partition count (never lowers it, as in Kafka) and persists it.
    pub fn set_partitions(&mut self, name: &str, count: u32) -> Result<TopicRecord> {
        let mut record = self.require(name)?.clone();
        validate_partitions(name, count)?;
        if count <= record.partitions {
            return Err(CoreError::InvalidPartitions {
                topic: name.into(),
                count,
                reason: format!(
                    "the topic has {} partition(s); the count can only be increased",
                    record.partitions
                ),
            });
        }
        record.partitions = count;
        let mut next = self.topics.clone();
        next.insert(record.name.clone(), record.clone());
        self.commit(next)?;
        Ok(record)
    }

    fn require(&self, name: &str) -> Result<&TopicRecord> {
        self.get(name)
            .ok_or_else(|| CoreError::UnknownTopic { name: name.into() })
    }

    fn commit(&mut self, next: BTreeMap<TopicName, TopicRecord>) -> Result<()> {
        let file = RegistryFile {
            format: REGISTRY_FORMAT,
            topics: next.values().cloned().collect(),
        };
        let mut bytes = serde_json::to_vec_pretty(&file).map_err(|e| CoreError::Internal {
            what: "serializing the topic registry",
            reason: e.to_string(),
        })?;
        bytes.push(b'\n');
        write_atomically(&self.dir, REGISTRY_FILE, REGISTRY_TMP, &bytes)?;
        self.topics = next;
        self.existed = true;
        Ok(())
    }
}

/// Replaces `dir/name` with `bytes` so that a crash leaves either the old or the new
/// content, never a mix: write a temp file, fsync it, rename it over, fsync the directory
/// (without the last step the rename itself may not survive a power loss).
pub(crate) fn write_atomically(dir: &Path, name: &str, tmp_name: &str, bytes: &[u8]) -> Result<()> {
    let tmp = dir.join(tmp_name);
    let path = dir.join(name);
    let mut f = File::create(&tmp).ctx("create", &tmp)?;
    f.write_all(bytes).ctx("write", &tmp)?;
    f.sync_all().ctx("fsync", &tmp)?;
    drop(f);
    fs::rename(&tmp, &path).ctx("rename into place", &path)?;
    sync_dir(dir)
}

/// Makes directory entries (creations, renames, removals) in `dir` durable.
pub(crate) fn sync_dir(dir: &Path) -> Result<()> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .ctx("fsync directory", dir)
}
