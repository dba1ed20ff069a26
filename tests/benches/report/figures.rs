//! The report's rows: one measured figure of this project, the reference
//! measured in the same run, their ratio and the goal it is held to; and
//! the Markdown table they make.

use std::fmt::Write as _;

/// A measured quantity with its unit.
#[derive(Debug, Clone, Copy)]
pub enum Measure {
    /// Messages per second: higher is better.
    Rate(f64),
    /// Seconds: lower is better.
    Seconds(f64),
    /// Milliseconds: lower is better.
    Millis(f64),
    /// Mebibytes: lower is better.
    MiB(f64),
    /// Rounds or messages delivered out of those expected: higher is better.
    Count { got: usize, of: usize },
}

impl Measure {
    /// The figure in its unit, for ratios and the chart.
    pub fn value(self) -> f64 {
        match self {
            Measure::Rate(v) | Measure::Seconds(v) | Measure::Millis(v) | Measure::MiB(v) => v,
            Measure::Count { got, .. } => got as f64,
        }
    }

    fn higher_is_better(self) -> bool {
        matches!(self, Measure::Rate(_) | Measure::Count { .. })
    }

    fn text(self) -> String {
        match self {
            Measure::Rate(v) => format!("{} msg/s", thousands(v)),
            Measure::Seconds(v) => format!("{v:.3} s"),
            Measure::Millis(v) => format!("{v:.1} ms"),
            Measure::MiB(v) => format!("{v:.1} MiB"),
            Measure::Count { got, of } => format!("{got} of {of}"),
        }
    }
}

/// What a figure is held to.
#[derive(Debug, Clone, Copy)]
pub enum Goal {
    /// This project at least this many times as good as the reference
    /// (see [`Figure::advantage`]).
    AtLeast(f64),
    /// This project's own figure at most this value, in its unit.
    AtMost(f64),
    /// Every one counted: a [`Measure::Count`] whose `got` is its `of`.
    All,
}

/// One row of the report.
#[derive(Debug, Clone)]
pub struct Figure {
    /// The part of the report: live, retained, send, listen, ordering, ...
    pub section: &'static str,
    /// What was measured, briefly.
    pub case: String,
    /// This project's figure.
    pub ours: Measure,
    /// The peer measured in the same run, and its figure.
    pub reference: Option<(String, Measure)>,
    /// What the figure is held to, if anything.
    pub goal: Option<Goal>,
}

impl Figure {
    /// A row without reference or goal.
    pub fn alone(section: &'static str, case: impl Into<String>, ours: Measure) -> Figure {
        Figure {
            section,
            case: case.into(),
            ours,
            reference: None,
            goal: None,
        }
    }

    /// A row next to `reference`'s figure.
    pub fn versus(
        section: &'static str,
        case: impl Into<String>,
        ours: Measure,
        reference: &str,
        theirs: Measure,
    ) -> Figure {
        Figure {
            section,
            case: case.into(),
            ours,
            reference: Some((reference.to_owned(), theirs)),
            goal: None,
        }
    }

    /// The same row held to `goal`.
    pub fn goal(mut self, goal: Goal) -> Figure {
        self.goal = Some(goal);
        self
    }

    /// How many times as good as the reference this project is: above 1
    /// means better, whether the unit counts up (rates) or down (time).
    pub fn advantage(&self) -> Option<f64> {
        let (_, theirs) = self.reference.as_ref()?;
        let (ours, theirs) = (self.ours.value(), theirs.value());
        let ratio = if self.ours.higher_is_better() {
            ours / theirs
        } else {
            theirs / ours
        };
        ratio.is_finite().then_some(ratio)
    }

    /// Whether the goal is met; `None` without a goal.
    pub fn met(&self) -> Option<bool> {
        Some(match self.goal? {
            Goal::AtLeast(ratio) => self.advantage().is_some_and(|a| a >= ratio),
            Goal::AtMost(limit) => self.ours.value() <= limit,
            Goal::All => matches!(self.ours, Measure::Count { got, of } if got == of),
        })
    }
}

/// The figures as one Markdown table.
pub fn markdown(figures: &[Figure]) -> String {
    let mut out = String::from(
        "| section | case | this project | reference (same run) | advantage | goal |\n\
         | --- | --- | --- | --- | --- | --- |\n",
    );
    for f in figures {
        let reference = match &f.reference {
            Some((name, theirs)) => format!("{name}: {}", theirs.text()),
            None => "-".to_owned(),
        };
        let advantage = f
            .advantage()
            .map_or_else(|| "-".to_owned(), |a| format!("{a:.2}x"));
        let goal = match (f.goal, f.met()) {
            (Some(Goal::AtLeast(r)), Some(met)) => format!("≥ {r}x: {}", verdict(met)),
            (Some(Goal::AtMost(v)), Some(met)) => {
                format!("≤ {}: {}", f.ours_like(v), verdict(met))
            }
            (Some(Goal::All), Some(met)) => format!("all: {}", verdict(met)),
            _ => "-".to_owned(),
        };
        let _ = writeln!(
            out,
            "| {} | {} | {} | {reference} | {advantage} | {goal} |",
            f.section,
            f.case,
            f.ours.text()
        );
    }
    out
}

impl Figure {
    /// `value` written in this figure's unit.
    fn ours_like(&self, value: f64) -> String {
        match self.ours {
            Measure::Rate(_) => Measure::Rate(value).text(),
            Measure::Seconds(_) => Measure::Seconds(value).text(),
            Measure::Millis(_) => Measure::Millis(value).text(),
            Measure::MiB(_) => Measure::MiB(value).text(),
            Measure::Count { of, .. } => format!("{value} of {of}"),
        }
    }
}

fn verdict(met: bool) -> &'static str {
    if met {
        "met"
    } else {
        "**not met**"
    }
}

/// `1234567.8` as `1,234,568`.
pub fn thousands(value: f64) -> String {
    let digits = format!("{:.0}", value.max(0.0));
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// The median of `values` (the mean of the middle two for an even count);
/// NaN for none.
pub fn median(values: &[f64]) -> f64 {
    let mut sorted = values.to_vec();
    sorted.sort_by(f64::total_cmp);
    let mid = sorted.len() / 2;
    match sorted.len() {
        0 => f64::NAN,
        n if n % 2 == 0 => (sorted[mid - 1] + sorted[mid]) / 2.0,
        _ => sorted[mid],
    }
}
