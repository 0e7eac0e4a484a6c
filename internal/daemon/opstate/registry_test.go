package opstate

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	"banger/internal/errdefs"
	"github.com/google/go-cmp/cmp"
)

func TestRegisterGetList(t *testing.T) {
	clock := newClock()
	r := NewRegistry[*testOp](Options{Now: clock.Now})
	start := clock.Now()
	for _, id := range []string{"b", "a", "c"} {
		mustRegister(t, r, newOp(id), nil)
		clock.Advance(time.Second)
	}

	op, st, err := r.Get("a")
	if err != nil {
		t.Fatalf("Get(a): %v", err)
	}
	if op.id != "a" {
		t.Errorf("Get(a) returned op %q", op.id)
	}
	want := Status{
		ID: "a", Kind: "vm.create", Target: "vm-a", State: StateRunning,
		StartedAt: start.Add(time.Second), UpdatedAt: start.Add(time.Second), Seq: 1,
	}
	if diff := cmp.Diff(want, st); diff != "" {
		t.Errorf("Get(a) status mismatch (-want +got):\n%s", diff)
	}

	var ids []string
	for _, st := range r.List() {
		ids = append(ids, st.ID)
	}
	if diff := cmp.Diff([]string{"b", "a", "c"}, ids); diff != "" {
		t.Errorf("List() order mismatch (-want +got):\n%s", diff)
	}

	tests := []struct {
		name string
		err  error
		want error
	}{
		{"duplicate", r.Register(newOp("a"), nil), errdefs.ErrAlreadyExists},
		{"empty id", r.Register(newOp(""), nil), errdefs.ErrInvalidArgument},
		{"get unknown", func() error { _, _, err := r.Get("nope"); return err }(), errdefs.ErrNotFound},
	}
	for _, tt := range tests {
		if !errors.Is(tt.err, tt.want) {
			t.Errorf("%s: error = %v, want %v", tt.name, tt.err, tt.want)
		}
	}
}

func TestProgressSnapshotsAreCopies(t *testing.T) {
	r := NewRegistry[*testOp](Options{})
	mustRegister(t, r, newOp("a"), nil)
	items := []ItemProgress{{Name: "layer1", State: "downloading", Done: 1, Total: 10}}
	if err := r.Progress("a", Progress{Phase: "pull", Items: items}); err != nil {
		t.Fatalf("Progress: %v", err)
	}
	items[0].Done = 99 // the caller reuses its slice

	_, st, _ := r.Get("a")
	st.Progress.Items[0].State = "mutated"
	_, st, _ = r.Get("a")
	want := Progress{Phase: "pull", Items: []ItemProgress{{Name: "layer1", State: "downloading", Done: 1, Total: 10}}}
	if diff := cmp.Diff(want, st.Progress); diff != "" {
		t.Errorf("stored progress changed through a copy (-want +got):\n%s", diff)
	}
	if st.Seq != 2 {
		t.Errorf("Seq = %d, want 2", st.Seq)
	}
}

func TestProgressErrors(t *testing.T) {
	r := NewRegistry[*testOp](Options{})
	mustRegister(t, r, newOp("a"), nil)
	r.Complete("a", nil, nil)
	if err := r.Progress("a", Progress{Phase: "late"}); !errors.Is(err, errdefs.ErrFailedPrecondition) {
		t.Errorf("Progress after Complete: error = %v, want ErrFailedPrecondition", err)
	}
	if err := r.Progress("nope", Progress{}); !errors.Is(err, errdefs.ErrNotFound) {
		t.Errorf("Progress(unknown): error = %v, want ErrNotFound", err)
	}
}

func TestComplete(t *testing.T) {
	boom := errors.New("mkfs failed")
	tests := []struct {
		name      string
		err       error
		want      State
		wantError string
	}{
		{"success", nil, StateSucceeded, ""},
		{"failure", boom, StateFailed, "mkfs failed"},
		{"context canceled", fmt.Errorf("create vm: %w", context.Canceled), StateCanceled, "create vm: context canceled"},
		{"errdefs canceled", errdefs.ErrCanceled, StateCanceled, "canceled"},
		{"deadline is a failure", context.DeadlineExceeded, StateFailed, "context deadline exceeded"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			clock := newClock()
			r := NewRegistry[*testOp](Options{Now: clock.Now})
			cancel, calls := countingCancel()
			mustRegister(t, r, newOp("a"), cancel)
			clock.Advance(time.Minute)
			r.Complete("a", "result", tt.err)

			_, st, err := r.Get("a")
			if err != nil {
				t.Fatalf("Get: %v", err)
			}
			if st.State != tt.want || st.Error != tt.wantError || !errors.Is(st.Err, tt.err) {
				t.Errorf("status = %s %q %v, want %s %q %v", st.State, st.Error, st.Err, tt.want, tt.wantError, tt.err)
			}
			if st.Result != "result" || !st.FinishedAt.Equal(clock.Now()) || st.Seq != 2 {
				t.Errorf("status = result %v finished %v seq %d", st.Result, st.FinishedAt, st.Seq)
			}
			if n := calls(); n != 1 {
				t.Errorf("cancel func called %d times by Complete, want 1", n)
			}
		})
	}
}

func TestCompleteIdempotent(t *testing.T) {
	r := NewRegistry[*testOp](Options{})
	cancel, calls := countingCancel()
	mustRegister(t, r, newOp("a"), cancel)
	r.Complete("a", 1, nil)
	_, first, _ := r.Get("a")
	r.Complete("a", 2, errors.New("late failure"))
	r.Complete("unknown", nil, nil)
	_, second, _ := r.Get("a")
	if diff := cmp.Diff(first, second); diff != "" {
		t.Errorf("second Complete changed the status (-first +second):\n%s", diff)
	}
	if n := calls(); n != 1 {
		t.Errorf("cancel func called %d times, want 1", n)
	}
}

func TestCancel(t *testing.T) {
	r := NewRegistry[*testOp](Options{})
	ctx, cancel := context.WithCancel(context.Background())
	mustRegister(t, r, newOp("a"), cancel)
	go func() { // the worker
		<-ctx.Done()
		r.Complete("a", nil, ctx.Err())
	}()

	if err := r.Cancel("a"); err != nil {
		t.Fatalf("Cancel: %v", err)
	}
	st, err := r.Wait(context.Background(), "a")
	if err != nil {
		t.Fatalf("Wait: %v", err)
	}
	if st.State != StateCanceled || !errors.Is(st.Err, context.Canceled) {
		t.Errorf("after Cancel: state %s err %v, want canceled", st.State, st.Err)
	}
	if err := r.Cancel("a"); !errors.Is(err, errdefs.ErrFailedPrecondition) {
		t.Errorf("Cancel(finished): error = %v, want ErrFailedPrecondition", err)
	}
	if err := r.Cancel("nope"); !errors.Is(err, errdefs.ErrNotFound) {
		t.Errorf("Cancel(unknown): error = %v, want ErrNotFound", err)
	}
	mustRegister(t, r, newOp("plain"), nil)
	if err := r.Cancel("plain"); !errors.Is(err, errdefs.ErrFailedPrecondition) {
		t.Errorf("Cancel(no cancel func): error = %v, want ErrFailedPrecondition", err)
	}
}

func TestCancelThenOtherError(t *testing.T) {
	// A worker killed by cancellation often fails with the tool's error
	// rather than ctx.Err(); the operation still ends canceled.
	r := NewRegistry[*testOp](Options{})
	cancel, _ := countingCancel()
	mustRegister(t, r, newOp("a"), cancel)
	if err := r.Cancel("a"); err != nil {
		t.Fatalf("Cancel: %v", err)
	}
	r.Complete("a", nil, errors.New("signal: killed"))
	if _, st, _ := r.Get("a"); st.State != StateCanceled || st.Error != "signal: killed" {
		t.Errorf("state %s error %q, want canceled with the worker's error", st.State, st.Error)
	}
}

func TestExpiry(t *testing.T) {
	clock := newClock()
	r := NewRegistry[*testOp](Options{Now: clock.Now, Retention: time.Minute})
	mustRegister(t, r, newOp("done"), nil)
	mustRegister(t, r, newOp("running"), nil)
	mustRegister(t, r, newOp("swept"), nil)
	r.Complete("done", nil, nil)
	r.Complete("swept", nil, errors.New("x"))

	clock.Advance(time.Minute - time.Nanosecond)
	if _, _, err := r.Get("done"); err != nil {
		t.Errorf("Get(done) within retention: %v", err)
	}
	if n := r.Sweep(clock.Now()); n != 0 {
		t.Errorf("Sweep within retention dropped %d", n)
	}

	clock.Advance(time.Nanosecond)
	if _, _, err := r.Get("done"); !errors.Is(err, errdefs.ErrNotFound) {
		t.Errorf("Get(done) after retention: error = %v, want ErrNotFound", err)
	}
	if n := r.Sweep(clock.Now()); n != 1 {
		t.Errorf("Sweep dropped %d, want 1 (swept)", n)
	}
	clock.Advance(24 * time.Hour)
	if got := r.List(); len(got) != 1 || got[0].ID != "running" {
		t.Errorf("List() = %v, want only the running op", got)
	}
	if _, _, err := r.Get("running"); err != nil {
		t.Errorf("running op expired: %v", err)
	}
	if err := r.Register(newOp("done"), nil); err != nil {
		t.Errorf("re-Register an expired id: %v", err)
	}
}

func TestDefaults(t *testing.T) {
	r := NewRegistry[*testOp](Options{Retention: -1})
	if r.retention != DefaultRetention || r.now == nil {
		t.Errorf("retention %v, now set %v: want defaults", r.retention, r.now != nil)
	}
}
