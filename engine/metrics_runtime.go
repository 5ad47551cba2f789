package engine

import (
	"bytes"
	"io"

	"github.com/VictoriaMetrics/metrics"

	"github.com/ratatoskr-mq/ratatoskr/telemetry/promtext"
)

// The Go runtime's and the process's metrics are VictoriaMetrics/metrics'
// (go_*, process_*); they are written by the library and annotated here
// with the metadata it does not give (promtext's package doc says why).
// The names are the library's, kept as they are: dashboards know them.
// Three of them end in _count without being a histogram's or a summary's
// count and are untyped, as the format's conventions ask; the library's
// process_io_*_total, which it calls gauges, are counters.
//
// A family the table does not know (a newer library, another operating
// system) is still written, without metadata; TestMetricsMetadata fails
// on any, so the table grows with the library.

// writeRuntimeMetrics writes the Go runtime's and the process's metrics,
// open file descriptors among them.
func writeRuntimeMetrics(w io.Writer) {
	var b bytes.Buffer
	metrics.WriteGoMetrics(&b)
	metrics.WriteProcMetrics(&b)
	metrics.WriteFDMetrics(&b)
	promtext.Annotate(w, b.Bytes(), runtimeFamilies)
}

var runtimeFamilies = familyMap(
	promtext.NewHistogram("go_sched_latencies_seconds", "Seconds goroutines spent runnable before running (Go scheduler latency)."),
	promtext.NewCounter("go_mutex_wait_seconds_total", "Seconds goroutines spent blocked on sync.Mutex and sync.RWMutex."),
	promtext.NewCounter("go_gc_mark_assist_cpu_seconds_total", "CPU seconds goroutines spent helping the GC mark (estimated)."),
	promtext.NewCounter("go_gc_cpu_seconds_total", "CPU seconds the GC used (estimated)."),
	promtext.NewHistogram("go_gc_pauses_seconds", "Seconds of each stop-the-world GC pause."),
	promtext.NewCounter("go_scavenge_cpu_seconds_total", "CPU seconds spent returning memory to the OS (estimated)."),
	promtext.NewGauge("go_memlimit_bytes", "The Go runtime's soft memory limit (GOMEMLIMIT), in bytes."),
	promtext.NewGauge("go_memstats_alloc_bytes", "Bytes of heap objects allocated and not yet freed (as go_memstats_heap_alloc_bytes)."),
	promtext.NewCounter("go_memstats_alloc_bytes_total", "Bytes allocated for heap objects since start."),
	promtext.NewGauge("go_memstats_buck_hash_sys_bytes", "Bytes of memory in profiling bucket hash tables."),
	promtext.NewCounter("go_memstats_frees_total", "Heap objects freed since start."),
	promtext.NewGauge("go_memstats_gc_cpu_fraction", "Fraction of the available CPU time the GC has used since start."),
	promtext.NewGauge("go_memstats_gc_sys_bytes", "Bytes of memory in GC metadata."),
	promtext.NewGauge("go_memstats_heap_alloc_bytes", "Bytes of heap objects allocated and not yet freed."),
	promtext.NewGauge("go_memstats_heap_idle_bytes", "Bytes in idle (unused) heap spans."),
	promtext.NewGauge("go_memstats_heap_inuse_bytes", "Bytes in in-use heap spans."),
	promtext.NewGauge("go_memstats_heap_objects", "Heap objects allocated and not yet freed."),
	promtext.NewGauge("go_memstats_heap_released_bytes", "Bytes of heap memory returned to the OS."),
	promtext.NewGauge("go_memstats_heap_sys_bytes", "Bytes of heap memory obtained from the OS."),
	promtext.NewGauge("go_memstats_last_gc_time_seconds", "Unix time of the end of the last GC, in seconds."),
	promtext.NewCounter("go_memstats_lookups_total", "Pointer lookups by the runtime since start."),
	promtext.NewCounter("go_memstats_mallocs_total", "Heap objects allocated since start."),
	promtext.NewGauge("go_memstats_mcache_inuse_bytes", "Bytes in mcache structures in use."),
	promtext.NewGauge("go_memstats_mcache_sys_bytes", "Bytes of memory obtained from the OS for mcache structures."),
	promtext.NewGauge("go_memstats_mspan_inuse_bytes", "Bytes in mspan structures in use."),
	promtext.NewGauge("go_memstats_mspan_sys_bytes", "Bytes of memory obtained from the OS for mspan structures."),
	promtext.NewGauge("go_memstats_next_gc_bytes", "Heap size in bytes at which the next GC starts."),
	promtext.NewGauge("go_memstats_other_sys_bytes", "Bytes of memory in other runtime allocations."),
	promtext.NewGauge("go_memstats_stack_inuse_bytes", "Bytes in goroutine stack spans."),
	promtext.NewGauge("go_memstats_stack_sys_bytes", "Bytes of stack memory obtained from the OS."),
	promtext.NewGauge("go_memstats_sys_bytes", "Bytes of memory the Go runtime obtained from the OS in all."),
	promtext.Family{Name: "go_cgo_calls_count", Type: promtext.Untyped, Help: "Cgo calls made since start (a counter)."},
	promtext.Family{Name: "go_cpu_count", Type: promtext.Untyped, Help: "Logical CPUs usable by the process at start (a gauge)."},
	promtext.Family{Name: "go_gc_duration_seconds", Type: promtext.Summary,
		Help: "Seconds of the recent stop-the-world GC pauses, as quantiles; sum and count since start."},
	promtext.Family{Name: "go_gc_forced_count", Type: promtext.Untyped, Help: "GC cycles forced by the application since start (a counter)."},
	promtext.NewGauge("go_gomaxprocs", "GOMAXPROCS: OS threads that may run Go code at once."),
	promtext.NewGauge("go_goroutines", "Goroutines that exist now."),
	promtext.NewGauge("go_threads", "OS threads the Go runtime created."),
	promtext.NewGauge("go_info", "Always 1; the version label is the Go version the broker was built with."),
	promtext.NewGauge("go_info_ext", "Always 1; the labels are the compiler, GOARCH, GOOS and GOROOT of the build."),

	promtext.NewCounter("process_cpu_seconds_system_total", "CPU seconds the process spent in the kernel."),
	promtext.NewCounter("process_cpu_seconds_total", "CPU seconds the process spent, user and system."),
	promtext.NewCounter("process_cpu_seconds_user_total", "CPU seconds the process spent in user mode."),
	promtext.NewCounter("process_major_pagefaults_total", "Page faults that needed a read from disk."),
	promtext.NewCounter("process_minor_pagefaults_total", "Page faults served without a read from disk."),
	promtext.NewGauge("process_num_threads", "OS threads of the process."),
	promtext.NewGauge("process_resident_memory_bytes", "Resident memory of the process, in bytes."),
	promtext.NewGauge("process_start_time_seconds", "Unix time the process started, in seconds."),
	promtext.NewGauge("process_virtual_memory_bytes", "Virtual memory of the process, in bytes."),
	promtext.NewGauge("process_virtual_memory_peak_bytes", "Peak virtual memory of the process, in bytes."),
	promtext.NewGauge("process_resident_memory_peak_bytes", "Peak resident memory of the process, in bytes."),
	promtext.NewGauge("process_resident_memory_anon_bytes", "Resident anonymous memory of the process (heap, stacks), in bytes."),
	promtext.NewGauge("process_resident_memory_file_bytes", "Resident file-backed memory of the process, in bytes."),
	promtext.NewGauge("process_resident_memory_shared_bytes", "Resident shared memory of the process, in bytes."),
	promtext.NewCounter("process_io_read_bytes_total", "Bytes the process read, page cache included."),
	promtext.NewCounter("process_io_written_bytes_total", "Bytes the process wrote, page cache included."),
	promtext.NewCounter("process_io_read_syscalls_total", "Read system calls of the process."),
	promtext.NewCounter("process_io_write_syscalls_total", "Write system calls of the process."),
	promtext.NewCounter("process_io_storage_read_bytes_total", "Bytes the process caused to be read from storage."),
	promtext.NewCounter("process_io_storage_written_bytes_total", "Bytes the process caused to be written to storage."),
	promtext.NewCounter("process_pressure_cpu_waiting_seconds_total", "Seconds some of the cgroup's tasks waited for a CPU (PSI)."),
	promtext.NewCounter("process_pressure_cpu_stalled_seconds_total", "Seconds all of the cgroup's tasks waited for a CPU (PSI)."),
	promtext.NewCounter("process_pressure_io_waiting_seconds_total", "Seconds some of the cgroup's tasks waited for I/O (PSI)."),
	promtext.NewCounter("process_pressure_io_stalled_seconds_total", "Seconds all of the cgroup's tasks waited for I/O (PSI)."),
	promtext.NewCounter("process_pressure_memory_waiting_seconds_total", "Seconds some of the cgroup's tasks waited for memory (PSI)."),
	promtext.NewCounter("process_pressure_memory_stalled_seconds_total", "Seconds all of the cgroup's tasks waited for memory (PSI)."),
	promtext.NewCounter("process_cgroup_cpu_throttled_seconds_total", "Seconds the cgroup's CPU quota held the process back."),
	promtext.NewGauge("process_max_fds", "The process's limit on open file descriptors."),
	promtext.NewGauge("process_open_fds", "File descriptors the process has open."),
)
