//! A sandbox's usage in the cgroup v1 metrics format containerd's own
//! runc shim reports, so that `ctr task metrics`, CRI's ContainerStats and
//! kubelet's summaries read berth tasks as they read any other.

use berth_runtime::SandboxStats;
use containerd_shim::protos::cgroups::metrics::{
    CPUStat, CPUUsage, MemoryEntry, MemoryStat, Metrics, Throttle,
};
use containerd_shim::protos::protobuf::well_known_types::any::Any;
use containerd_shim::protos::protobuf::{Message, MessageField};

/// The type containerd decodes the metrics as (its bare name: containerd's
/// type registry does not resolve a `type.googleapis.com/` prefix).
const METRICS_TYPE: &str = "io.containerd.cgroups.v1.Metrics";

/// `stats` as cgroup metrics: memory used, peak and cap; CPU time and
/// time throttled (berth has no kernel/user split: all is user time).
pub fn cgroup_metrics(stats: &SandboxStats, memory_limit: Option<u64>) -> Any {
    let cpu_nanos = u64::try_from(stats.cpu_time.as_nanos()).unwrap_or(u64::MAX);
    let metrics = Metrics {
        memory: MessageField::some(MemoryStat {
            rss: stats.memory_bytes,
            total_rss: stats.memory_bytes,
            usage: MessageField::some(MemoryEntry {
                usage: stats.memory_bytes,
                max: stats.peak_memory_bytes,
                limit: memory_limit.unwrap_or(u64::MAX),
                ..Default::default()
            }),
            ..Default::default()
        }),
        cpu: MessageField::some(CPUStat {
            usage: MessageField::some(CPUUsage {
                total: cpu_nanos,
                user: cpu_nanos,
                ..Default::default()
            }),
            throttling: MessageField::some(Throttle {
                throttled_time: u64::try_from(stats.throttled.as_nanos()).unwrap_or(u64::MAX),
                ..Default::default()
            }),
            ..Default::default()
        }),
        ..Default::default()
    };
    Any {
        type_url: METRICS_TYPE.to_owned(),
        // Writing a message built in memory to a Vec cannot fail.
        value: metrics.write_to_bytes().unwrap_or_default(),
        ..Default::default()
    }
}
