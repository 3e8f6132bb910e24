//! The version each (service, instance) runs, from `service.version` in the resources apps
//! send. A version not seen before for that instance (or seen first since the agent started)
//! is shipped once in the next batch; the collector decides what is a change (a version new to
//! the service) and keeps the history. One lock and two lookups per resource of a request,
//! not per span.

use std::collections::HashMap;
use std::sync::Mutex;

use stormwatch_model::{now_ns, ServiceVersion};

/// Most (service, instance) pairs remembered; beyond, new pairs are not tracked (counted).
pub const MAX_INSTANCES: usize = 10_000;

/// A resource's identity and version, as a receiver read it.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Seen {
    pub service: String,
    pub instance: String,
    pub version: String,
    pub environment: String,
}

impl Seen {
    /// From a resource's attributes; `None` without a service name or a version.
    pub fn of(service: &str, instance: &str, get: impl Fn(&str) -> Option<String>) -> Option<Seen> {
        let version = get("service.version").filter(|v| !v.is_empty())?;
        if service.is_empty() {
            return None;
        }
        Some(Seen {
            service: service.to_owned(),
            instance: instance.to_owned(),
            version,
            environment: get("deployment.environment.name")
                .or_else(|| get("deployment.environment"))
                .unwrap_or_default(),
        })
    }
}

#[derive(Debug, Default)]
struct Inner {
    /// service → instance → version.
    running: HashMap<String, HashMap<String, String>>,
    instances: usize,
    untracked: u64,
    new: Vec<ServiceVersion>,
}

#[derive(Debug, Default)]
pub struct Versions(Mutex<Inner>);

impl Versions {
    /// Records what a request's resources run.
    pub fn observe(&self, seen: &[Seen]) {
        if seen.is_empty() {
            return;
        }
        let mut g = self.0.lock().unwrap_or_else(|p| p.into_inner());
        let inner = &mut *g;
        for s in seen {
            let known = inner
                .running
                .get(&s.service)
                .and_then(|i| i.get(&s.instance));
            match known {
                Some(v) if *v == s.version => continue,
                None if inner.instances >= MAX_INSTANCES => {
                    inner.untracked += 1;
                    continue;
                }
                None => inner.instances += 1,
                Some(_) => {}
            }
            inner
                .running
                .entry(s.service.clone())
                .or_default()
                .insert(s.instance.clone(), s.version.clone());
            inner.new.push(ServiceVersion {
                service: s.service.clone(),
                instance: s.instance.clone(),
                version: s.version.clone(),
                environment: s.environment.clone(),
                first_seen_ns: now_ns(),
            });
        }
    }

    /// The versions seen since the last call, for the next batch.
    pub fn take_new(&self) -> Vec<ServiceVersion> {
        let mut g = self.0.lock().unwrap_or_else(|p| p.into_inner());
        std::mem::take(&mut g.new)
    }

    /// Pairs not tracked because [`MAX_INSTANCES`] were.
    pub fn untracked(&self) -> u64 {
        self.0.lock().unwrap_or_else(|p| p.into_inner()).untracked
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn seen(instance: &str, version: &str) -> Seen {
        Seen {
            service: "board".into(),
            instance: instance.into(),
            version: version.into(),
            environment: "prod".into(),
        }
    }

    #[test]
    fn a_version_is_shipped_once_per_instance_and_again_when_it_changes() {
        let v = Versions::default();
        v.observe(&[seen("a", "1.4.1"), seen("b", "1.4.1")]);
        v.observe(&[seen("a", "1.4.1")]);
        let first = v.take_new();
        assert_eq!(first.len(), 2);
        assert!(v.take_new().is_empty());
        v.observe(&[seen("a", "1.4.2"), seen("b", "1.4.1")]);
        let new = v.take_new();
        assert_eq!(new.len(), 1);
        assert_eq!(
            (new[0].instance.as_str(), new[0].version.as_str()),
            ("a", "1.4.2")
        );
        assert_eq!(new[0].environment, "prod");
    }

    #[test]
    fn a_resource_without_a_version_is_not_tracked() {
        let get = |k: &str| (k == "deployment.environment").then(|| "prod".to_owned());
        assert_eq!(Seen::of("board", "a", get), None);
        let get = |k: &str| match k {
            "service.version" => Some("2".to_owned()),
            "deployment.environment" => Some("staging".to_owned()),
            _ => None,
        };
        assert_eq!(Seen::of("board", "a", get).unwrap().environment, "staging");
        assert_eq!(Seen::of("", "a", get), None);
    }
}
