package store

import (
	"encoding/json"
	"errors"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
)

func TestOperationLifecycle(t *testing.T) {
	ctx := t.Context()
	s := openTestStore(t)
	c := newClock()
	s.now = c.Now

	op, err := s.CreateOperation(ctx, Operation{Kind: "vm.create", Target: "web", Phase: "image"})
	if err != nil {
		t.Fatalf("CreateOperation: %v", err)
	}
	if op.State != OpRunning || len(op.ID) != 16 || !op.FinishedAt.IsZero() || op.CreatedAt.IsZero() {
		t.Errorf("CreateOperation = %+v", op)
	}

	op.Phase = "boot"
	mid, err := s.UpdateOperation(ctx, op)
	if err != nil {
		t.Fatalf("UpdateOperation: %v", err)
	}
	if mid.Phase != "boot" || !mid.UpdatedAt.After(op.UpdatedAt) || !mid.FinishedAt.IsZero() {
		t.Errorf("UpdateOperation(phase) = %+v", mid)
	}

	mid.State = OpSucceeded
	mid.Result = json.RawMessage(`{"vm":"0123456789abcdef"}`)
	done, err := s.UpdateOperation(ctx, mid)
	if err != nil {
		t.Fatalf("UpdateOperation: %v", err)
	}
	want := mid
	want.UpdatedAt = done.UpdatedAt
	want.FinishedAt = done.UpdatedAt // finishing now
	if diff := cmp.Diff(want, done); diff != "" {
		t.Errorf("UpdateOperation(succeeded) (-want +got):\n%s", diff)
	}
	if got, err := s.GetOperation(ctx, op.ID); err != nil || !cmp.Equal(done, got) {
		t.Errorf("GetOperation (-want +got):\n%s (err %v)", cmp.Diff(done, got), err)
	}

	for name, run := range map[string]func() error{
		"get missing":    func() error { _, err := s.GetOperation(ctx, "nope"); return err },
		"update missing": func() error { _, err := s.UpdateOperation(ctx, Operation{ID: "nope", State: OpFailed}); return err },
	} {
		if err := run(); !errors.Is(err, ErrNotFound) {
			t.Errorf("%s: %v, want not found", name, err)
		}
	}
	for name, run := range map[string]func() error{
		"bad state": func() error { _, err := s.UpdateOperation(ctx, Operation{ID: op.ID, State: "paused"}); return err },
		"no kind":   func() error { _, err := s.CreateOperation(ctx, Operation{}); return err },
		"bad result": func() error {
			_, err := s.CreateOperation(ctx, Operation{Kind: "x", Result: json.RawMessage("nope")})
			return err
		},
	} {
		if err := run(); !errors.Is(err, ErrInvalidArgument) {
			t.Errorf("%s: %v, want invalid argument", name, err)
		}
	}
	if _, err := s.CreateOperation(ctx, Operation{ID: op.ID, Kind: "x"}); !errors.Is(err, ErrAlreadyExists) {
		t.Errorf("duplicate id: %v, want already exists", err)
	}
}

func TestMarkRunningOperationsInterrupted(t *testing.T) {
	ctx := t.Context()
	s := openTestStore(t)
	c := newClock()
	s.now = c.Now

	mk := func(op Operation) Operation {
		t.Helper()
		got, err := s.CreateOperation(ctx, op)
		if err != nil {
			t.Fatal(err)
		}
		return got
	}
	r1 := mk(Operation{Kind: "vm.create", Target: "a", Phase: "disk"})
	r2 := mk(Operation{Kind: "image.pull", Target: "debian"})
	r3 := mk(Operation{Kind: "vm.create", Target: "b", Error: "first attempt at boot timed out"})
	ok := mk(Operation{Kind: "vm.create", Target: "c", State: OpSucceeded})
	failed := mk(Operation{Kind: "vm.create", Target: "d", State: OpFailed, Error: "no space"})

	n, err := s.MarkRunningOperationsInterrupted(ctx)
	if err != nil || n != 3 {
		t.Fatalf("MarkRunningOperationsInterrupted = %d, %v; want 3", n, err)
	}
	for _, tt := range []struct {
		before    Operation
		wantState OperationState
		wantError string
	}{
		{r1, OpInterrupted, interruptedMessage},
		{r2, OpInterrupted, interruptedMessage},
		{r3, OpInterrupted, "first attempt at boot timed out"}, // an error already recorded is kept
		{ok, OpSucceeded, ""},
		{failed, OpFailed, "no space"},
	} {
		got, err := s.GetOperation(ctx, tt.before.ID)
		if err != nil {
			t.Fatal(err)
		}
		if got.State != tt.wantState || got.Error != tt.wantError {
			t.Errorf("%s: state %s error %q, want %s %q", got.Target, got.State, got.Error, tt.wantState, tt.wantError)
		}
		if got.Phase != tt.before.Phase {
			t.Errorf("%s: phase %q, want %q kept", got.Target, got.Phase, tt.before.Phase)
		}
		if got.FinishedAt.IsZero() {
			t.Errorf("%s: FinishedAt not set", got.Target)
		}
		if tt.wantState == OpSucceeded && !got.FinishedAt.Equal(tt.before.FinishedAt) {
			t.Errorf("%s: finished op was touched: %v -> %v", got.Target, tt.before.FinishedAt, got.FinishedAt)
		}
	}
	if n, err := s.MarkRunningOperationsInterrupted(ctx); err != nil || n != 0 {
		t.Errorf("second MarkRunningOperationsInterrupted = %d, %v; want 0", n, err)
	}
}

func TestDeleteOperationsFinishedBefore(t *testing.T) {
	ctx := t.Context()
	s := openTestStore(t)
	base := time.Date(2025, 6, 1, 0, 0, 0, 0, time.UTC)
	finish := func(target string, at time.Time) {
		t.Helper()
		op, err := s.CreateOperation(ctx, Operation{Kind: "vm.create", Target: target})
		if err != nil {
			t.Fatal(err)
		}
		op.State, op.FinishedAt = OpSucceeded, at
		if _, err := s.UpdateOperation(ctx, op); err != nil {
			t.Fatal(err)
		}
	}
	finish("old1", base.Add(-48*time.Hour))
	finish("old2", base.Add(-time.Nanosecond)) // just before the cut
	finish("edge", base)                       // at the cut: kept
	finish("new", base.Add(time.Hour))
	if _, err := s.CreateOperation(ctx, Operation{Kind: "vm.create", Target: "running"}); err != nil {
		t.Fatal(err)
	}

	n, err := s.DeleteOperationsFinishedBefore(ctx, base)
	if err != nil || n != 2 {
		t.Fatalf("DeleteOperationsFinishedBefore = %d, %v; want 2", n, err)
	}
	ops, err := s.ListOperations(ctx)
	if err != nil {
		t.Fatal(err)
	}
	var targets []string
	for _, op := range ops {
		targets = append(targets, op.Target)
	}
	if diff := cmp.Diff([]string{"edge", "new", "running"}, targets); diff != "" {
		t.Errorf("remaining operations (-want +got):\n%s", diff)
	}
	// Running operations survive even a cut in the future.
	if n, err := s.DeleteOperationsFinishedBefore(ctx, base.Add(1000*time.Hour)); err != nil || n != 2 {
		t.Errorf("DeleteOperationsFinishedBefore(future) = %d, %v; want 2", n, err)
	}
	if ops, _ := s.ListOperations(ctx); len(ops) != 1 || ops[0].Target != "running" {
		t.Errorf("after deleting all finished: %+v", ops)
	}
}
