package store

import (
	"fmt"
	"path/filepath"
	"sync"
	"testing"
)

// Many goroutines create, update, read and list distinct VMs while all of
// them also read-modify-write one shared row. No operation may fail (in
// particular not with SQLITE_BUSY), and no increment may be lost.
func TestConcurrentUse(t *testing.T) {
	const workers, iterations = 16, 50
	ctx := t.Context()
	s := openTestStore(t)
	f := newFixtures(t, s)
	shared := f.vm("shared") // VCPUs counts the increments, starting at 2

	var wg sync.WaitGroup
	errs := make(chan error, workers*iterations)
	for w := range workers {
		wg.Go(func() {
			for i := range iterations {
				if err := concurrentStep(t, s, f.image.ID, shared.ID, w, i); err != nil {
					errs <- fmt.Errorf("worker %d step %d: %w", w, i, err)
					return
				}
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}

	list, err := s.ListVMs(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(list) != workers*iterations+1 {
		t.Errorf("ListVMs has %d VMs, want %d", len(list), workers*iterations+1)
	}
	running := 0
	for _, vm := range list {
		if vm.State == VMRunning {
			running++
		}
	}
	if running != workers*iterations {
		t.Errorf("%d VMs running, want %d", running, workers*iterations)
	}
	got, err := s.GetVM(ctx, shared.ID)
	if err != nil {
		t.Fatal(err)
	}
	if want := shared.VCPUs + workers*iterations; got.VCPUs != want {
		t.Errorf("shared counter = %d, want %d (lost updates)", got.VCPUs, want)
	}
	ips, err := s.ListIPAllocations(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(ips) != workers*iterations {
		t.Errorf("%d IPs allocated, want %d", len(ips), workers*iterations)
	}
}

// concurrentStep is one worker's iteration: its own VM through its life,
// plus one atomic increment of the shared row.
func concurrentStep(t *testing.T, s *Store, imageID, sharedID string, w, i int) error {
	ctx := t.Context()
	vm, err := s.CreateVM(ctx, testVM(fmt.Sprintf("w%d-%d", w, i), imageID))
	if err != nil {
		return err
	}
	if err := s.AllocateIP(ctx, vm.ID, fmt.Sprintf("10.%d.%d.1", w, i)); err != nil {
		return err
	}
	if _, err := s.SetVMState(ctx, vm.ID, VMRunning, ""); err != nil {
		return err
	}
	if _, err := s.ResolveVM(ctx, vm.Name); err != nil {
		return err
	}
	if i%10 == 0 { // listing hundreds of rows is slow under -race; often enough
		if _, err := s.ListVMs(ctx); err != nil {
			return err
		}
	}
	return s.WithTx(ctx, func(tx *Tx) error {
		cur, err := tx.GetVM(ctx, sharedID)
		if err != nil {
			return err
		}
		cur.VCPUs++
		_, err = tx.UpdateVM(ctx, cur)
		return err
	})
}

// Two Stores on one file stand in for two processes (the daemon and an
// operator's tool): their writers contend for SQLite's lock itself, and
// busy_timeout with BEGIN IMMEDIATE must absorb it.
func TestConcurrentStoresOnOneFile(t *testing.T) {
	const perStore, iterations = 4, 25
	ctx := t.Context()
	path := filepath.Join(t.TempDir(), "banger.db")
	a := openTestStoreAt(t, path)
	b := openTestStoreAt(t, path)
	f := newFixtures(t, a)
	shared := f.vm("shared")

	var wg sync.WaitGroup
	errs := make(chan error, 2*perStore)
	for si, s := range []*Store{a, b} {
		for w := range perStore {
			wg.Go(func() {
				for i := range iterations {
					err := s.WithTx(ctx, func(tx *Tx) error {
						cur, err := tx.GetVM(ctx, shared.ID)
						if err != nil {
							return err
						}
						cur.VCPUs++
						_, err = tx.UpdateVM(ctx, cur)
						return err
					})
					if err == nil {
						_, err = s.CreateVM(ctx, testVM(fmt.Sprintf("s%d-w%d-%d", si, w, i), f.image.ID))
					}
					if err != nil {
						errs <- fmt.Errorf("store %d worker %d step %d: %w", si, w, i, err)
						return
					}
				}
			})
		}
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	got, err := b.GetVM(ctx, shared.ID)
	if err != nil {
		t.Fatal(err)
	}
	if want := shared.VCPUs + 2*perStore*iterations; got.VCPUs != want {
		t.Errorf("shared counter = %d, want %d", got.VCPUs, want)
	}
	if list, _ := a.ListVMs(ctx); len(list) != 2*perStore*iterations+1 {
		t.Errorf("ListVMs has %d VMs, want %d", len(list), 2*perStore*iterations+1)
	}
}
