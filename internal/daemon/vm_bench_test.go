package daemon

import (
	"context"
	"fmt"
	"sync"
	"testing"
	"time"

	"banger/internal/store"
)

// BenchmarkCreateThroughput creates N VMs at once on the fake-VMM seam (a
// real daemon, store, disks, TAPs in a namespace and guest-init SSH; the
// VMM "boots" at once), so the figure is the daemon's own: creates/s as N
// grows. Each VM is removed between iterations, off the clock.
func BenchmarkCreateThroughput(b *testing.B) {
	for _, n := range []int{1, 2, 4, 8} {
		b.Run(fmt.Sprintf("N=%d", n), func(b *testing.B) {
			e := vmtSetup(b, nil)
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				var wg sync.WaitGroup
				errs := make(chan error, n)
				for j := 0; j < n; j++ {
					wg.Add(1)
					go func() {
						defer wg.Done()
						if _, op, err := e.create(fmt.Sprintf("c%d-%d", i, j)); err != nil || op.State != "succeeded" {
							errs <- fmt.Errorf("create: %v (%s %s)", err, op.State, op.Error)
						}
					}()
				}
				wg.Wait()
				close(errs)
				for err := range errs {
					b.Fatal(err)
				}
				b.StopTimer()
				for j := 0; j < n; j++ {
					if err := e.rm(fmt.Sprintf("c%d-%d", i, j), true); err != nil {
						b.Fatal(err)
					}
				}
				b.StartTimer()
			}
			b.ReportMetric(float64(b.N*n)/b.Elapsed().Seconds(), "creates/s")
		})
	}
}

// BenchmarkCreateSerialisedSection times what vm.create does while it
// holds createVMMu (choosing a free IP, one transaction recording the VM
// and its allocation): the part of a create that cannot run in parallel.
func BenchmarkCreateSerialisedSection(b *testing.B) {
	e := vmtSetup(b, nil)
	ctx := context.Background()
	n, err := e.d.vms.network(ctx)
	if err != nil {
		b.Fatal(err)
	}
	var held time.Duration
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		start := time.Now()
		vm, _, err := e.d.vms.record(ctx, store.VM{
			Name: fmt.Sprintf("s%d", i), ImageID: e.image.ID, KernelID: e.image.DefaultKernelID,
			State: store.VMCreated, VCPUs: 1, MemoryMiB: 64, DiskBytes: e.image.SizeBytes, VMM: store.VMMQEMU,
		}, n)
		held += time.Since(start)
		if err != nil {
			b.Fatal(err)
		}
		b.StopTimer()
		if err := e.d.store.DeleteVM(ctx, vm.ID); err != nil {
			b.Fatal(err)
		}
		b.StartTimer()
	}
	b.ReportMetric(float64(held.Microseconds())/float64(b.N)/1000, "ms-under-createVMMu")
}
