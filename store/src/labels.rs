//! The labels spans name (service, instance, operation, peer, db system, statement), stored
//! once each in `sw_labels` and referred to by their int4 id from `sw_spans` (migration 0022).
//!
//! Each store keeps the labels it has met in a bounded cache, both ways. A label it does not
//! know is looked up, and inserted when missing, in statements of their own (autocommit), never
//! inside a batch's transaction: the inserts are short and take their locks in (kind, value)
//! order, so two collectors inserting the same labels cannot deadlock, and the unique index
//! decides the id both get. A label committed for a batch that then rolls back is harmless.

use std::collections::{HashMap, HashSet};

use foldhash::fast::RandomState;

use crate::{Store, StoreError};

/// A map keyed by label, hashed with foldhash: a batch looks its labels up six times a span
/// (SipHash, the standard library's, was 3 % of the collector's CPU at the real shape).
type LabelMap<K> = HashMap<K, i32, RandomState>;

/// What a label names: the `kind` column of `sw_labels`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum LabelKind {
    Service = 1,
    Instance = 2,
    Operation = 3,
    Peer = 4,
    DbSystem = 5,
    Statement = 6,
}

impl LabelKind {
    fn index(self) -> usize {
        self as usize - 1
    }
}

/// Labels a store remembers (both ways); forgotten all at once beyond this many, so the cache
/// stays bounded whatever the cardinality of operations or statements.
pub const MAX_CACHED_LABELS: usize = 200_000;

/// The cache: per kind, value → id; and id → value.
#[derive(Default)]
pub(crate) struct LabelCache {
    ids: [LabelMap<String>; 6],
    values: HashMap<i32, String>,
}

impl LabelCache {
    fn insert(&mut self, kind: i16, id: i32, value: String) {
        if self.values.len() >= MAX_CACHED_LABELS {
            *self = LabelCache::default();
        }
        if let Some(map) = self.ids.get_mut((kind - 1) as usize) {
            map.insert(value.clone(), id);
        }
        self.values.insert(id, value);
    }
}

/// The ids of a batch's labels, per kind: what [`crate::batches::copy_spans`] writes.
pub(crate) type BatchLabels<'a> = [LabelMap<&'a str>; 6];

/// The id of `value` in `labels` (None for an empty label: stored as NULL).
pub(crate) fn id_in(labels: &BatchLabels<'_>, kind: LabelKind, value: &str) -> Option<i32> {
    labels[kind.index()].get(value).copied()
}

impl Store {
    fn label_cache(&self) -> std::sync::MutexGuard<'_, LabelCache> {
        self.labels.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The ids of `wanted` labels (empty values are skipped), inserting the missing ones into
    /// `sw_labels`, each in a short statement of its own.
    pub(crate) async fn resolve_labels<'a>(
        &self,
        wanted: impl Iterator<Item = (LabelKind, &'a str)>,
    ) -> Result<BatchLabels<'a>, StoreError> {
        let mut out: BatchLabels<'a> = Default::default();
        let mut missing: Vec<(i16, &'a str)> = Vec::new();
        {
            let cache = self.label_cache();
            for (kind, value) in wanted {
                if value.is_empty() || out[kind.index()].contains_key(value) {
                    continue;
                }
                match cache.ids[kind.index()].get(value) {
                    Some(id) => {
                        out[kind.index()].insert(value, *id);
                    }
                    None => {
                        out[kind.index()].insert(value, 0);
                        missing.push((kind as i16, value));
                    }
                }
            }
        }
        if missing.is_empty() {
            return Ok(out);
        }
        // Sorted, so concurrent inserts of the same labels lock them in the same order.
        missing.sort_unstable();
        let client = self.client().await?;
        let select = client
            .prepare_cached(
                "SELECT l.id, l.kind, l.value FROM sw_labels l
                   JOIN unnest($1::int2[], $2::text[]) AS t(k, v)
                     ON l.kind = t.k AND md5(l.value) = md5(t.v) AND l.value = t.v",
            )
            .await?;
        let mut found: Vec<(i32, i16, String)> = Vec::new();
        let mut pending = missing;
        for round in 0..2 {
            let (kinds, values): (Vec<i16>, Vec<&str>) = pending.iter().copied().unzip();
            for r in client.query(&select, &[&kinds, &values]).await? {
                found.push((r.get(0), r.get(1), r.get(2)));
            }
            let got: HashSet<(i16, &str)> =
                found.iter().map(|(_, k, v)| (*k, v.as_str())).collect();
            pending.retain(|kv| !got.contains(kv));
            if pending.is_empty() || round == 1 {
                break;
            }
            let (kinds, values): (Vec<i16>, Vec<&str>) = pending.iter().copied().unzip();
            client
                .execute(
                    "INSERT INTO sw_labels (kind, value)
                     SELECT k, v FROM unnest($1::int2[], $2::text[]) WITH ORDINALITY AS t(k, v, n)
                      ORDER BY n
                     ON CONFLICT (kind, md5(value)) DO NOTHING",
                    &[&kinds, &values],
                )
                .await?;
        }
        if let Some((kind, value)) = pending.first() {
            // Only an md5 collision with another label of the same kind gets here.
            return Err(StoreError::Corrupt(format!(
                "label {value:?} of kind {kind} could not be stored in sw_labels"
            )));
        }
        let mut cache = self.label_cache();
        for (id, kind, value) in found {
            if let Some(slot) = out
                .get_mut((kind - 1) as usize)
                .and_then(|m| m.get_mut(value.as_str()))
            {
                *slot = id;
            }
            cache.insert(kind, id, value);
        }
        Ok(out)
    }

    /// The id of one label, without inserting it: None when no span was ever stored with it
    /// (then no span of the compact layout matches a filter on it).
    pub(crate) async fn label_id(
        &self,
        kind: LabelKind,
        value: &str,
    ) -> Result<Option<i32>, StoreError> {
        if let Some(id) = self.label_cache().ids[kind.index()].get(value) {
            return Ok(Some(*id));
        }
        let client = self.client().await?;
        let stmt = client
            .prepare_cached(
                "SELECT id FROM sw_labels WHERE kind = $1 AND md5(value) = md5($2) AND value = $2",
            )
            .await?;
        let id: Option<i32> = client
            .query_opt(&stmt, &[&(kind as i16), &value])
            .await?
            .map(|r| r.get(0));
        if let Some(id) = id {
            self.label_cache().insert(kind as i16, id, value.to_owned());
        }
        Ok(id)
    }

    /// The id of an optional filter label: `Ok(None)` without a filter; `Ok(Some(None))` for a
    /// label never stored.
    pub(crate) async fn filter_label_id(
        &self,
        kind: LabelKind,
        value: Option<&str>,
    ) -> Result<Option<i32>, StoreError> {
        match value {
            Some(v) => self.label_id(kind, v).await,
            None => Ok(None),
        }
    }

    /// The values of label `ids` (zero and unknown ids are left out), from the cache or
    /// `sw_labels`.
    pub(crate) async fn label_values(
        &self,
        ids: impl Iterator<Item = i32>,
    ) -> Result<HashMap<i32, String>, StoreError> {
        let mut out = HashMap::new();
        let mut missing = HashSet::new();
        {
            let cache = self.label_cache();
            for id in ids {
                if out.contains_key(&id) || missing.contains(&id) {
                    continue;
                }
                match cache.values.get(&id) {
                    Some(v) => {
                        out.insert(id, v.clone());
                    }
                    None => {
                        missing.insert(id);
                    }
                }
            }
        }
        if missing.is_empty() {
            return Ok(out);
        }
        let client = self.client().await?;
        let stmt = client
            .prepare_cached("SELECT id, kind, value FROM sw_labels WHERE id = ANY($1)")
            .await?;
        let missing: Vec<i32> = missing.into_iter().collect();
        let rows = client.query(&stmt, &[&missing]).await?;
        let mut cache = self.label_cache();
        for r in rows {
            let (id, kind, value): (i32, i16, String) = (r.get(0), r.get(1), r.get(2));
            out.insert(id, value.clone());
            cache.insert(kind, id, value);
        }
        Ok(out)
    }
}
