//! One module per dashboard area; each page struct lives beside its handler and renders
//! `templates/<area>/<page>.html`, which extends `base.html`.

pub mod alerts;
pub mod databases;
pub mod dependencies;
pub mod hosts;
pub mod incident_timeline;
pub mod incidents;
pub mod login;
pub mod map;
pub mod metrics;
pub mod overview;
pub mod scatter;
pub mod spans;
pub mod traces;

use serde::Deserialize;

use crate::auth::Viewer;
use crate::range::{self, Window};

/// Every query parameter any page reads; each page uses its own subset. All are strings so
/// that a bad value gets a clear 400 naming it, not a generic deserialization error.
#[derive(Debug, Default, Deserialize)]
pub struct PageQuery {
    pub range: Option<String>,
    pub from: Option<String>,
    pub to: Option<String>,
    pub service: Option<String>,
    pub class: Option<String>,
    pub peer: Option<String>,
    /// Minimum duration, milliseconds.
    pub min_ms: Option<String>,
    /// Scatter: upper bound of the y axis (zoom), milliseconds.
    pub max_ms: Option<String>,
    /// Scatter: `log` (default) or `linear`.
    pub scale: Option<String>,
    /// Slow spans: `duration`, `start`, `service`, `peer`.
    pub sort: Option<String>,
    /// Dependencies: `hour` (the previous hour, default) or `day` (same time yesterday).
    pub baseline: Option<String>,
    /// `off` stops auto-refresh.
    pub refresh: Option<String>,
}

impl PageQuery {
    /// The window, `default` preset when none is given.
    pub fn window(&self, default: &'static str) -> Result<Window, crate::error::WebError> {
        Window::resolve(
            self.range.as_deref(),
            self.from.as_deref(),
            self.to.as_deref(),
            default,
            range::now_ms(),
        )
    }

    /// The page's filters (not the window) as a query string, `&`-prefixed pairs.
    pub fn filters(&self) -> String {
        let mut out = String::new();
        for (k, v) in [
            ("service", &self.service),
            ("class", &self.class),
            ("peer", &self.peer),
            ("min_ms", &self.min_ms),
            ("max_ms", &self.max_ms),
            ("scale", &self.scale),
            ("sort", &self.sort),
            ("baseline", &self.baseline),
            ("refresh", &self.refresh),
        ] {
            if let Some(v) = v.as_deref().filter(|v| !v.is_empty()) {
                out.push('&');
                out.push_str(k);
                out.push('=');
                out.push_str(&urlencode(v));
            }
        }
        out
    }

    /// Filters as (name, value) pairs, for hidden inputs of the custom-window form.
    pub fn filter_pairs(&self) -> Vec<(&'static str, String)> {
        [
            ("service", &self.service),
            ("class", &self.class),
            ("peer", &self.peer),
            ("min_ms", &self.min_ms),
            ("max_ms", &self.max_ms),
            ("scale", &self.scale),
            ("sort", &self.sort),
            ("baseline", &self.baseline),
            ("refresh", &self.refresh),
        ]
        .into_iter()
        .filter_map(|(k, v)| v.clone().filter(|v| !v.is_empty()).map(|v| (k, v)))
        .collect()
    }

    /// A non-empty text parameter.
    pub fn text(v: &Option<String>) -> Option<String> {
        v.as_deref()
            .map(str::trim)
            .filter(|v| !v.is_empty())
            .map(str::to_owned)
    }

    /// A non-negative number of milliseconds.
    pub fn millis(
        field: &'static str,
        v: &Option<String>,
    ) -> Result<Option<f64>, crate::error::WebError> {
        match v.as_deref().map(str::trim).filter(|v| !v.is_empty()) {
            None => Ok(None),
            Some(s) => s
                .parse::<f64>()
                .ok()
                .filter(|v| v.is_finite() && *v >= 0.0)
                .map(Some)
                .ok_or_else(|| {
                    crate::error::WebError::bad(
                        field,
                        format!("`{s}` is not a non-negative number of milliseconds"),
                    )
                }),
        }
    }

    /// A dependency class name.
    pub fn class(
        &self,
    ) -> Result<Option<stormwatch_model::DependencyClass>, crate::error::WebError> {
        Self::text(&self.class)
            .map(|c| {
                c.parse()
                    .map_err(|e: String| crate::error::WebError::bad("class", e))
            })
            .transpose()
    }
}

pub use crate::input::{path_segment, urlencode};

/// A link of the time-range picker.
pub struct PresetLink {
    pub label: &'static str,
    pub href: String,
    pub active: bool,
}

/// A link of the navigation bar.
pub struct NavLink {
    pub label: &'static str,
    pub href: String,
    pub active: bool,
}

/// What `base.html` needs: navigation, the time-range picker, the window, who is signed in.
pub struct Chrome {
    pub title: String,
    /// The page's path: where the picker's links and form go.
    pub path: String,
    pub nav: Vec<NavLink>,
    pub presets: Vec<PresetLink>,
    pub custom: bool,
    pub hidden: Vec<(&'static str, String)>,
    pub from_input: String,
    pub to_input: String,
    pub from_utc: String,
    pub to_utc: String,
    pub from_iso: String,
    pub to_iso: String,
    pub user: Option<String>,
    pub role: &'static str,
    /// Seconds between automatic reloads, when the page refreshes itself (preset windows).
    pub refresh_s: Option<u32>,
    pub window_query: String,
}

const AREAS: &[(&str, &str)] = &[
    ("Overview", "/"),
    ("Scatter", "/scatter"),
    ("Dependencies", "/dependencies"),
    ("Map", "/map"),
    ("Slow spans", "/spans"),
    ("Databases", "/databases"),
    ("Hosts", "/hosts"),
    ("Incidents", "/incidents"),
    ("Alerts", "/alerts"),
];

impl Chrome {
    pub fn new(
        title: impl Into<String>,
        path: impl Into<String>,
        w: &Window,
        q: &PageQuery,
        viewer: &Viewer,
    ) -> Chrome {
        let filters = q.filters();
        let wq = w.query();
        let path = path.into();
        Chrome {
            title: title.into(),
            nav: AREAS
                .iter()
                .map(|(label, href)| NavLink {
                    label,
                    href: format!("{href}?{wq}"),
                    active: *href == path.as_str(),
                })
                .collect(),
            presets: range::PRESETS
                .iter()
                .map(|(label, _)| PresetLink {
                    label,
                    href: format!("{path}?range={label}{filters}"),
                    active: w.preset == Some(*label),
                })
                .collect(),
            custom: w.preset.is_none(),
            hidden: q.filter_pairs(),
            from_input: range::utc_input(w.from_ms),
            to_input: range::utc_input(w.to_ms),
            from_utc: range::utc_human(w.from_ms),
            to_utc: range::utc_human(w.to_ms),
            from_iso: range::utc_rfc3339(w.from_ms),
            to_iso: range::utc_rfc3339(w.to_ms),
            user: viewer.user.clone(),
            role: viewer.role.as_str(),
            refresh_s: None,
            window_query: wq,
            path,
        }
    }

    /// Reload every `secs` seconds, unless the window is custom (it would not move) or the
    /// URL says `refresh=off`.
    pub fn refreshing(mut self, secs: u32, q: &PageQuery) -> Chrome {
        if !self.custom && q.refresh.as_deref() != Some("off") {
            self.refresh_s = Some(secs);
        }
        self
    }
}
