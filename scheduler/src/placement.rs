//! Admission by resources: a pod is placed on the node only if its requests
//! fit in what the node has left, as kube-scheduler's resource-fit filter
//! decides. The node's allocatable memory and CPU come from the machine
//! unless the daemon's configuration overrides them.

use std::collections::BTreeMap;

use crate::quantity::Resources;

/// Why a pod was not admitted, in kube-scheduler's words
/// (`0/1 nodes are available: 1 Insufficient memory.`).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("0/1 nodes are available: {}.", reasons.iter().map(|r| format!("1 {r}")).collect::<Vec<_>>().join(", "))]
pub struct Unschedulable {
    /// `Insufficient memory`, `Insufficient cpu`.
    pub reasons: Vec<String>,
}

/// The node's capacity and the pods admitted to it.
#[derive(Debug, Clone)]
pub struct Node {
    allocatable: Resources,
    admitted: BTreeMap<String, Resources>,
}

impl Node {
    /// A node that can give `allocatable` to pods.
    pub fn new(allocatable: Resources) -> Node {
        Node {
            allocatable,
            admitted: BTreeMap::new(),
        }
    }

    /// What the node can give in all.
    pub fn allocatable(&self) -> Resources {
        self.allocatable
    }

    /// What admitted pods have requested.
    pub fn requested(&self) -> Resources {
        self.admitted
            .values()
            .fold(Resources::default(), |sum, r| sum.plus(*r))
    }

    /// Whether the pod `key` holds a place.
    pub fn holds(&self, key: &str) -> bool {
        self.admitted.contains_key(key)
    }

    /// Admits the pod `key` if `requests` fit in what is left; admitting a
    /// pod that holds a place already is a no-op.
    pub fn admit(&mut self, key: &str, requests: Resources) -> Result<(), Unschedulable> {
        if self.admitted.contains_key(key) {
            return Ok(());
        }
        let free = self.allocatable.minus(self.requested());
        let mut reasons = Vec::new();
        if requests.memory_bytes > free.memory_bytes {
            reasons.push("Insufficient memory".to_owned());
        }
        if requests.cpu_millis > free.cpu_millis {
            reasons.push("Insufficient cpu".to_owned());
        }
        if !reasons.is_empty() {
            return Err(Unschedulable { reasons });
        }
        self.admitted.insert(key.to_owned(), requests);
        Ok(())
    }

    /// Gives back the place of pod `key` (a deleted or finished pod).
    pub fn release(&mut self, key: &str) {
        self.admitted.remove(key);
    }
}

/// The machine's memory and CPUs, as a node's allocatable resources.
pub fn machine_resources() -> Resources {
    let cpus = std::thread::available_parallelism()
        .map(|n| n.get() as u64)
        .unwrap_or(1);
    Resources {
        memory_bytes: machine_memory().unwrap_or(1 << 30),
        cpu_millis: cpus * 1000,
    }
}

#[cfg(target_os = "linux")]
fn machine_memory() -> Option<u64> {
    let text = std::fs::read_to_string("/proc/meminfo").ok()?;
    let line = text.lines().find(|l| l.starts_with("MemTotal:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

#[cfg(not(target_os = "linux"))]
fn machine_memory() -> Option<u64> {
    // Without a portable system call in std, other systems use the
    // configured value or the fallback; the daemon's config overrides it.
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    const MI: u64 = 1024 * 1024;

    #[test]
    fn pods_are_admitted_while_requests_fit_and_again_after_a_release() {
        let mut node = Node::new(Resources {
            memory_bytes: 1024 * MI,
            cpu_millis: 2000,
        });
        let half = Resources {
            memory_bytes: 512 * MI,
            cpu_millis: 200,
        };
        node.admit("a", half).expect("fits");
        node.admit("b", half).expect("fits");
        node.admit("a", half).expect("already admitted");
        let refused = node.admit("c", half).expect_err("full");
        assert_eq!(
            refused.to_string(),
            "0/1 nodes are available: 1 Insufficient memory."
        );
        node.release("b");
        node.admit("c", half).expect("room again");
        let cpu = node
            .admit(
                "d",
                Resources {
                    memory_bytes: 0,
                    cpu_millis: 5000,
                },
            )
            .expect_err("cpu");
        assert_eq!(cpu.reasons, vec!["Insufficient cpu".to_owned()]);
    }
}
