package daemon

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"syscall"
	"testing"
	"time"

	"banger/internal/store"
)

// recordStoppedVMs records n stopped VMs (row, IP, directory and
// handles.json) straight into the store, as n earlier creates would
// have left them.
func (e *vmtEnv) recordStoppedVMs(b *testing.B, n int) {
	b.Helper()
	ctx := context.Background()
	for i := 0; i < n; i++ {
		vm, err := e.d.store.CreateVM(ctx, store.VM{
			ID: store.NewID(), Name: fmt.Sprintf("rec-%d", i), ImageID: e.image.ID, KernelID: e.image.DefaultKernelID,
			State: store.VMStopped, VCPUs: 1, MemoryMiB: 128, DiskBytes: e.image.SizeBytes, VMM: "qemu",
			MAC: fmt.Sprintf("02:00:00:00:%02x:%02x", i/256, i%256), Options: []byte("{}"),
		})
		if err != nil {
			b.Fatal(err)
		}
		if err := e.d.store.AllocateIP(ctx, vm.ID, fmt.Sprintf("10.99.%d.%d", i/250, i%250+1)); err != nil {
			b.Fatal(err)
		}
		if err := os.MkdirAll(e.d.layout.VMDir(vm.ID), 0o700); err != nil {
			b.Fatal(err)
		}
		if err := writeHandles(e.d.layout.VMHandles(vm.ID), &vmHandles{VMM: "qemu", DiskPath: e.d.layout.VMDisk(vm.ID)}); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkDaemonStartup times Open (store, handle cache rebuilt from
// each handles.json, every VM checked) with 0, 100 and 1000 recorded VMs,
// plus 2 running VMs on the fake-VMM seam that the new daemon adopts.
func BenchmarkDaemonStartup(b *testing.B) {
	for _, n := range []int{0, 100, 1000} {
		b.Run(fmt.Sprintf("VMs=%d", n), func(b *testing.B) {
			e := vmtSetup(b, nil)
			e.mustCreate(b, "run-a")
			e.mustCreate(b, "run-b")
			e.recordStoppedVMs(b, n)
			e.c.Close()
			e.r.stop(b)
			logger := slog.New(slog.NewTextHandler(e.log, &slog.HandlerOptions{Level: slog.LevelWarn}))
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				d, err := Open(context.Background(), Options{Config: e.cfg, Logger: logger})
				if err != nil {
					b.Fatal(err)
				}
				b.StopTimer()
				d.opsCancel()
				d.vms.close()
				d.Close()
				b.StartTimer()
			}
			b.StopTimer()
			e.restartDaemon(b) // the cleanups stop a served daemon
		})
	}
}

// BenchmarkReconcilePass times one reconciler pass (each running VM's
// VMM checked against /proc, the ledger listed: TAPs, /proc scanned for
// VMMs, VM directories, loop devices) with 1000 recorded VMs.
func BenchmarkReconcilePass(b *testing.B) {
	e := vmtSetup(b, nil)
	e.mustCreate(b, "run-a")
	e.recordStoppedVMs(b, 1000)
	ctx := context.Background()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		e.d.vms.reconcilePass(ctx)
	}
}

// BenchmarkDeathToRelease times from a VMM's death (SIGKILL from outside)
// to its VM recorded stopped with its TAP released: for a VMM the daemon
// started (its child: the exit watcher wakes at once) and for one it
// adopted after a restart (watched through a pidfd, polled every 200 ms).
func BenchmarkDeathToRelease(b *testing.B) {
	for _, adopted := range []bool{false, true} {
		b.Run(fmt.Sprintf("adopted=%v", adopted), func(b *testing.B) {
			e := vmtSetup(b, nil)
			var total time.Duration
			for i := 0; i < b.N; i++ {
				b.StopTimer()
				vm := e.mustCreate(b, fmt.Sprintf("d%d", i))
				if adopted {
					e.restartDaemon(b)
				}
				pid := e.handlesPID(b, vm.ID)
				b.StartTimer()
				t0 := time.Now()
				syscall.Kill(pid, syscall.SIGKILL)
				if !vmtWaitFor(10*time.Second, func() bool {
					row, ok := e.row(b, vm.ID)
					return ok && row.State == store.VMStopped && !e.hasTAP(b, vm.ID)
				}) {
					b.Fatalf("vm %s not released 10 s after its VMM died", vm.Name)
				}
				total += time.Since(t0)
				b.StopTimer()
				if err := e.rm(vm.Name, true); err != nil {
					b.Fatal(err)
				}
				b.StartTimer()
			}
			b.ReportMetric(float64(total.Milliseconds())/float64(b.N), "ms/release")
		})
	}
}
