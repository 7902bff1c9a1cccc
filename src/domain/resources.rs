//! Resources an agent offers and a task needs: scalars (cpus, mem, disk, gpus) and host
//! port ranges.

use serde::{Deserialize, Serialize};

/// Scalar resources. Memory and disk in MB, as in Marathon's app JSON.
#[derive(Debug, Clone, Copy, PartialEq, Default, Serialize, Deserialize)]
pub struct Resources {
    pub cpus: f64,
    pub mem: f64,
    pub disk: f64,
    pub gpus: f64,
}

/// Small epsilon so that 10 × 0.1 cpus fit into 1.0 cpus despite float rounding.
const EPS: f64 = 1e-9;

impl Resources {
    pub fn new(cpus: f64, mem: f64, disk: f64, gpus: f64) -> Self {
        Resources { cpus, mem, disk, gpus }
    }

    pub fn fits_in(&self, free: &Resources) -> bool {
        self.cpus <= free.cpus + EPS
            && self.mem <= free.mem + EPS
            && self.disk <= free.disk + EPS
            && self.gpus <= free.gpus + EPS
    }

    pub fn add(&mut self, o: &Resources) {
        self.cpus += o.cpus;
        self.mem += o.mem;
        self.disk += o.disk;
        self.gpus += o.gpus;
    }

    pub fn sub(&mut self, o: &Resources) {
        self.cpus -= o.cpus;
        self.mem -= o.mem;
        self.disk -= o.disk;
        self.gpus -= o.gpus;
    }
}

/// An inclusive range of host ports (`[31000-32000]`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct PortRange {
    pub begin: u16,
    pub end: u16,
}

impl PortRange {
    pub fn new(begin: u16, end: u16) -> Self {
        PortRange { begin, end }
    }

    pub fn contains(&self, p: u16) -> bool {
        self.begin <= p && p <= self.end
    }

    pub fn len(&self) -> usize {
        if self.end < self.begin {
            0
        } else {
            (self.end - self.begin) as usize + 1
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}
