//! What a rule measures of one of its instances, whichever kind of rule it is.

use stormwatch_store::signals::Labels;

/// One instance of a rule as measured now.
#[derive(Debug, Clone, PartialEq)]
pub struct Observation {
    pub labels: Labels,
    pub value: Option<f64>,
    pub threshold: Option<f64>,
    /// The condition holds.
    pub active: bool,
    /// One line: what is wrong.
    pub summary: String,
}
