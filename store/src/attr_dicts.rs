//! Span attributes stored zstd-compressed (`sw_spans.attrs`), with a dictionary trained on
//! stored attributes and kept in `sw_attr_dicts` (migration 0022).
//!
//! The attributes of one span are small (about 200 bytes of JSON at the real shape) and alike
//! from span to span, so zstd alone takes them to about 157 bytes but with a dictionary trained
//! on 5,000 of them to about 38 (docs/benchmarks.md, "Storage per span"). PostgreSQL itself
//! compresses only rows over about 2 KB, so the store compresses them.
//!
//! Until a dictionary exists, attributes are stored compressed without one (`attrs_dict` 0),
//! and the store keeps the attributes of [`TRAINING_SAMPLES`] spans, at most
//! [`SAMPLES_PER_BATCH`] from one batch (spread over it): one agent's first batch of a minute
//! holds thousands of spans of one service, and a dictionary trained on one or two services
//! compressed the others' attributes to half again as many bytes (53 against 36 on average in
//! one run of the ingest bench). With that many samples it trains a dictionary, stores it,
//! and compresses new rows with the newest dictionary from then on. A row names the dictionary it was compressed with, so rows from
//! before and after a dictionary both decode; dictionaries are never changed or deleted. A
//! store that starts finds the newest dictionary in the table (the first batch it stores
//! loads it). Two collectors training at once are serialized by an advisory lock: the second
//! finds the first one's dictionary and uses it.
//!
//! Batches that arrive while the first dictionary is being trained wait for it (a fraction of
//! a second, once in a database's life) instead of storing their attributes without one:
//! agents send together after a start, and the first wave would otherwise take several times
//! the room for good (in the ingest bench, 50 batches of 3,100 spans arrive at once).

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use stormwatch_model::SpanRef;
use zstd::dict::{DecoderDictionary, EncoderDictionary};
use zstd::zstd_safe;

use crate::{Store, StoreError};

/// Spans with attributes whose attributes train the first dictionary.
pub const TRAINING_SAMPLES: usize = 5_000;
/// Samples taken from one batch at most: the dictionary learns from ten batches or more.
pub const SAMPLES_PER_BATCH: usize = TRAINING_SAMPLES / 10;
/// Largest dictionary trained (bytes).
pub const DICT_BYTES: usize = 32 * 1024;
/// Bytes of samples kept for training at most (attributes are bounded, but many large ones
/// should not hold memory): training starts early when they reach it.
pub const MAX_SAMPLE_BYTES: usize = 8 << 20;
/// zstd level of attributes.
const LEVEL: i32 = 3;
/// Largest attributes JSON a row may decompress to: 64 attributes of a 128-byte key and a
/// 1 KiB value, escaped at worst six bytes a byte, fit well under it.
const MAX_JSON_BYTES: u64 = 1 << 20;
/// Advisory lock key that serializes dictionary training between collectors.
const TRAIN_LOCK: i64 = 0x5357_4154_5452_0001;

/// What a store remembers of the dictionaries.
#[derive(Default)]
pub(crate) struct AttrDicts {
    /// The newest dictionary was looked up in the database.
    loaded: bool,
    newest: Option<(i16, Arc<EncoderDictionary<'static>>)>,
    decoders: HashMap<i16, Arc<DecoderDictionary<'static>>>,
    /// Attributes JSON of stored spans, while there is no dictionary.
    samples: Vec<Vec<u8>>,
    sample_bytes: usize,
    /// Locked by the batch training the first dictionary, for as long as it trains; batches
    /// that come meanwhile wait on it.
    training: Option<Arc<tokio::sync::Mutex<()>>>,
}

/// Ends a training however the training future ends (done, failed or dropped with its
/// request): clears the gate, then unlocks it, so waiters find either the dictionary or no
/// training in progress.
struct Training<'a> {
    dicts: &'a std::sync::Mutex<AttrDicts>,
    _locked: tokio::sync::OwnedMutexGuard<()>,
}

impl Drop for Training<'_> {
    fn drop(&mut self) {
        let mut d = self.dicts.lock().unwrap_or_else(|p| p.into_inner());
        d.training = None;
    }
}

/// A batch's attributes as stored, one entry a span: the dictionary id (0: none) and where
/// its compressed JSON is in `bytes` (all spans' in one buffer); None for no attributes.
pub(crate) struct PackedAttributes {
    bytes: Vec<u8>,
    spans: Vec<Option<(i16, std::ops::Range<usize>)>>,
}

impl PackedAttributes {
    /// Span `i`'s dictionary id and compressed attributes.
    pub(crate) fn get(&self, i: usize) -> Option<(i16, &[u8])> {
        let (id, range) = self.spans.get(i)?.as_ref()?;
        Some((*id, &self.bytes[range.clone()]))
    }
}

/// Compresses a batch's attributes with the newest dictionary (or none: id 0).
pub(crate) struct AttrEncoder {
    id: i16,
    dict: Option<Arc<EncoderDictionary<'static>>>,
}

fn zstd_error(e: std::io::Error) -> StoreError {
    StoreError::Corrupt(format!("zstd: {e}"))
}

/// The JSON of a span's attributes ([`SpanRef::write_attributes_json`]): what is compressed,
/// and trained on.
fn json_of(span: &SpanRef<'_>) -> Vec<u8> {
    let mut out = Vec::new();
    span.write_attributes_json(&mut out);
    out
}

impl AttrEncoder {
    /// `(dictionary id, compressed JSON)` of each span's attributes; None for no attributes.
    pub(crate) fn compress<'a>(
        &self,
        spans: impl Iterator<Item = &'a SpanRef<'a>>,
    ) -> Result<PackedAttributes, StoreError> {
        let mut c = match &self.dict {
            Some(d) => zstd::bulk::Compressor::with_prepared_dictionary(d),
            None => zstd::bulk::Compressor::new(LEVEL),
        }
        .map_err(zstd_error)?;
        // The row names its dictionary: 4 bytes a row saved.
        c.set_parameter(zstd_safe::CParameter::DictIdFlag(false))
            .map_err(zstd_error)?;
        // One JSON buffer and one output buffer for the whole batch, not two a span.
        let mut json = Vec::new();
        let mut out = PackedAttributes {
            bytes: Vec::new(),
            spans: Vec::with_capacity(spans.size_hint().0),
        };
        for s in spans {
            if s.attributes.is_empty() {
                out.spans.push(None);
                continue;
            }
            json.clear();
            s.write_attributes_json(&mut json);
            let start = out.bytes.len();
            out.bytes
                .resize(start + zstd_safe::compress_bound(json.len()), 0);
            let n = c
                .compress_to_buffer(&json, &mut out.bytes[start..])
                .map_err(zstd_error)?;
            out.bytes.truncate(start + n);
            out.spans.push(Some((self.id, start..start + n)));
        }
        Ok(out)
    }
}

/// Decompresses attributes with the dictionaries a read needs.
pub(crate) struct AttrDecoder {
    dicts: HashMap<i16, Arc<DecoderDictionary<'static>>>,
    dctx: zstd_safe::DCtx<'static>,
}

impl AttrDecoder {
    /// The attributes of a row compressed with dictionary `dict` (0: none).
    pub(crate) fn decode(
        &mut self,
        dict: i16,
        packed: &[u8],
    ) -> Result<BTreeMap<String, String>, StoreError> {
        let corrupt = |why: String| StoreError::Corrupt(format!("span attributes: {why}"));
        let size = match zstd_safe::get_frame_content_size(packed) {
            Ok(Some(n)) if n <= MAX_JSON_BYTES => n as usize,
            _ => return Err(corrupt("no or too large a content size".into())),
        };
        let mut json: Vec<u8> = Vec::with_capacity(size);
        let done = match dict {
            0 => self.dctx.decompress(&mut json, packed),
            id => {
                let d = self
                    .dicts
                    .get(&id)
                    .ok_or_else(|| corrupt(format!("dictionary {id} is not stored")))?;
                self.dctx
                    .decompress_using_ddict(&mut json, packed, d.as_ddict())
            }
        };
        done.map_err(|code| corrupt(zstd_safe::get_error_name(code).to_owned()))?;
        serde_json::from_slice(&json).map_err(|e| corrupt(e.to_string()))
    }
}

impl Store {
    fn attr_dicts(&self) -> std::sync::MutexGuard<'_, AttrDicts> {
        self.attr_dicts.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The encoder for a batch of `spans`: the newest dictionary (looked up once per store).
    /// While there is none, keeps the spans' attributes as samples, and trains and stores a
    /// dictionary once it has [`TRAINING_SAMPLES`] of them.
    pub(crate) async fn attr_encoder(
        &self,
        spans: &[&SpanRef<'_>],
    ) -> Result<AttrEncoder, StoreError> {
        if !self.attr_dicts().loaded {
            let newest = self.newest_dict().await?;
            let mut d = self.attr_dicts();
            d.loaded = true;
            if d.newest.is_none() {
                d.newest = newest;
            }
        }
        let (ready, wait) = {
            let mut d = self.attr_dicts();
            if let Some((id, dict)) = &d.newest {
                return Ok(AttrEncoder {
                    id: *id,
                    dict: Some(dict.clone()),
                });
            }
            if let Some(gate) = &d.training {
                (None, Some(gate.clone()))
            } else {
                let with_attributes = spans.iter().filter(|s| !s.attributes.is_empty());
                let step = with_attributes.clone().count().div_ceil(SAMPLES_PER_BATCH);
                for s in with_attributes.step_by(step.max(1)) {
                    if d.samples.len() >= TRAINING_SAMPLES || d.sample_bytes >= MAX_SAMPLE_BYTES {
                        break;
                    }
                    let json = json_of(s);
                    d.sample_bytes += json.len();
                    d.samples.push(json);
                }
                let full =
                    d.samples.len() >= TRAINING_SAMPLES || d.sample_bytes >= MAX_SAMPLE_BYTES;
                if full {
                    // Locked before it is shared, so no batch can find it unlocked meanwhile.
                    let gate = Arc::new(tokio::sync::Mutex::new(()));
                    let locked = gate
                        .clone()
                        .try_lock_owned()
                        .expect("a new mutex is unlocked");
                    d.training = Some(gate);
                    let training = Training {
                        dicts: &self.attr_dicts,
                        _locked: locked,
                    };
                    (Some((std::mem::take(&mut d.samples), training)), None)
                } else {
                    (None, None)
                }
            }
        };
        if let Some(gate) = wait {
            drop(gate.lock().await);
            let d = self.attr_dicts();
            return Ok(match &d.newest {
                Some((id, dict)) => AttrEncoder {
                    id: *id,
                    dict: Some(dict.clone()),
                },
                // The training failed or was cancelled: stored without a dictionary.
                None => AttrEncoder { id: 0, dict: None },
            });
        }
        if let Some((samples, _training)) = ready {
            match self.train_dict(samples).await {
                Ok((id, dict)) => {
                    let mut d = self.attr_dicts();
                    d.sample_bytes = 0;
                    d.newest = Some((id, dict.clone()));
                    return Ok(AttrEncoder {
                        id,
                        dict: Some(dict),
                    });
                }
                Err(error) => {
                    // Attributes are still stored (without a dictionary); try again after as
                    // many samples more.
                    tracing::warn!(%error, "training the span attribute dictionary failed");
                    self.attr_dicts().sample_bytes = 0;
                }
            }
        }
        Ok(AttrEncoder { id: 0, dict: None })
    }

    /// The newest stored dictionary, prepared for compression.
    async fn newest_dict(
        &self,
    ) -> Result<Option<(i16, Arc<EncoderDictionary<'static>>)>, StoreError> {
        let client = self.client().await?;
        let row = client
            .query_opt(
                "SELECT id, dict FROM sw_attr_dicts ORDER BY id DESC LIMIT 1",
                &[],
            )
            .await?;
        Ok(row.map(|r| {
            let dict: Vec<u8> = r.get(1);
            (r.get(0), Arc::new(EncoderDictionary::copy(&dict, LEVEL)))
        }))
    }

    /// Trains a dictionary on `samples` and stores it, unless another collector stored one
    /// first (then that one is returned).
    async fn train_dict(
        &self,
        samples: Vec<Vec<u8>>,
    ) -> Result<(i16, Arc<EncoderDictionary<'static>>), StoreError> {
        let n = samples.len() as i32;
        let dict =
            tokio::task::spawn_blocking(move || zstd::dict::from_samples(&samples, DICT_BYTES))
                .await
                .map_err(|e| StoreError::Corrupt(format!("dictionary training: {e}")))?
                .map_err(zstd_error)?;
        let mut client = self.client().await?;
        let tx = client.transaction().await?;
        tx.execute("SELECT pg_advisory_xact_lock($1)", &[&TRAIN_LOCK])
            .await?;
        let existing = tx
            .query_opt(
                "SELECT id, dict FROM sw_attr_dicts ORDER BY id DESC LIMIT 1",
                &[],
            )
            .await?;
        let (id, dict): (i16, Vec<u8>) = match existing {
            Some(r) => (r.get(0), r.get(1)),
            None => {
                let r = tx
                    .query_one(
                        "INSERT INTO sw_attr_dicts (dict, samples) VALUES ($1, $2) RETURNING id",
                        &[&dict, &n],
                    )
                    .await?;
                (r.get(0), dict)
            }
        };
        tx.commit().await?;
        tracing::info!(
            id,
            bytes = dict.len(),
            samples = n,
            "span attribute dictionary ready"
        );
        Ok((id, Arc::new(EncoderDictionary::copy(&dict, LEVEL))))
    }

    /// A decoder for rows compressed with the dictionaries `ids` (0: none), reading the ones
    /// not yet cached from `sw_attr_dicts`.
    pub(crate) async fn attr_decoder(
        &self,
        ids: impl Iterator<Item = i16>,
    ) -> Result<AttrDecoder, StoreError> {
        let mut wanted: Vec<i16> = ids.filter(|id| *id != 0).collect();
        wanted.sort_unstable();
        wanted.dedup();
        let mut dicts = HashMap::new();
        let mut missing = Vec::new();
        {
            let d = self.attr_dicts();
            for id in wanted {
                match d.decoders.get(&id) {
                    Some(dict) => {
                        dicts.insert(id, dict.clone());
                    }
                    None => missing.push(id),
                }
            }
        }
        if !missing.is_empty() {
            let client = self.client().await?;
            let rows = client
                .query(
                    "SELECT id, dict FROM sw_attr_dicts WHERE id = ANY($1)",
                    &[&missing],
                )
                .await?;
            let mut d = self.attr_dicts();
            for r in rows {
                let (id, bytes): (i16, Vec<u8>) = (r.get(0), r.get(1));
                let dict = Arc::new(DecoderDictionary::copy(&bytes));
                d.decoders.insert(id, dict.clone());
                dicts.insert(id, dict);
            }
        }
        Ok(AttrDecoder {
            dicts,
            dctx: zstd_safe::DCtx::create(),
        })
    }
}
