package guestinit

import (
	"errors"
	"log/slog"
	"os"
	"os/signal"
	"sync"

	"golang.org/x/sys/unix"
)

// Reaper collects the exit status of child processes, driven by SIGCHLD.
//
// Children are started through Start, which registers a waiter for the new
// PID; the reaper delivers that child's status to it. In ReapAll mode (PID 1,
// or a process that made itself a child subreaper) it calls
// wait4(-1, WNOHANG) and silently discards the statuses of PIDs nobody
// registered: orphans re-parented to us. Otherwise it waits only for the
// PIDs it started, so it can share a process with os/exec.
//
// Nothing else in the process may wait for the children a Reaper starts
// (no exec.Cmd.Wait, no os.Process.Wait), and in ReapAll mode nothing else
// may start and wait for children at all: the reaper would take their
// status first.
type Reaper struct {
	all bool
	log *slog.Logger

	// startMu is held shared while a child is started and registered and
	// exclusively while reaping, so no child is reaped before its waiter
	// exists. Lock order: startMu, then mu.
	startMu sync.RWMutex

	mu      sync.Mutex
	waiters map[int]chan unix.WaitStatus // guarded by mu

	sigs      chan os.Signal
	stop      chan struct{}
	done      chan struct{}
	closeOnce sync.Once
}

// NewReaper starts a reaper. reapAll selects the mode (see Reaper); log may
// be nil.
func NewReaper(reapAll bool, log *slog.Logger) *Reaper {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	r := &Reaper{
		all:     reapAll,
		log:     log,
		waiters: make(map[int]chan unix.WaitStatus),
		sigs:    make(chan os.Signal, 1),
		stop:    make(chan struct{}),
		done:    make(chan struct{}),
	}
	signal.Notify(r.sigs, unix.SIGCHLD)
	go r.loop()
	return r
}

// Start runs start, which must create exactly one child process and return
// its PID, and registers a waiter for it. The returned channel receives the
// child's status once and is then closed; it is closed without a value if
// the status was lost (the child was reaped by someone else) or the reaper
// was closed.
func (r *Reaper) Start(start func() (int, error)) (int, <-chan unix.WaitStatus, error) {
	r.startMu.RLock()
	defer r.startMu.RUnlock()
	select {
	case <-r.stop:
		return 0, nil, errors.New("reaper closed")
	default:
	}
	pid, err := start()
	if err != nil {
		return 0, nil, err
	}
	ch := make(chan unix.WaitStatus, 1)
	r.mu.Lock()
	r.waiters[pid] = ch
	r.mu.Unlock()
	// If the child already exited, its SIGCHLD woke the loop, whose reap
	// is waiting for startMu: it will find this waiter.
	return pid, ch, nil
}

// Close stops the reaper. Waiters still registered have their channel
// closed without a status; their children are not waited for any more.
func (r *Reaper) Close() {
	r.closeOnce.Do(func() {
		close(r.stop)
		signal.Stop(r.sigs)
		<-r.done
		r.startMu.Lock()
		defer r.startMu.Unlock()
		r.mu.Lock()
		defer r.mu.Unlock()
		for pid, ch := range r.waiters {
			close(ch)
			delete(r.waiters, pid)
		}
	})
}

func (r *Reaper) loop() {
	defer close(r.done)
	for {
		select {
		case <-r.stop:
			return
		case <-r.sigs:
			r.reap()
		}
	}
}

// reap collects every child that has exited.
func (r *Reaper) reap() {
	r.startMu.Lock()
	defer r.startMu.Unlock()
	if r.all {
		for {
			var ws unix.WaitStatus
			pid, err := unix.Wait4(-1, &ws, unix.WNOHANG, nil)
			if err == unix.EINTR {
				continue
			}
			if err != nil || pid <= 0 {
				return
			}
			r.deliver(pid, ws, true)
		}
	}
	r.mu.Lock()
	pids := make([]int, 0, len(r.waiters))
	for pid := range r.waiters {
		pids = append(pids, pid)
	}
	r.mu.Unlock()
	for _, pid := range pids {
		var ws unix.WaitStatus
		got, err := unix.Wait4(pid, &ws, unix.WNOHANG, nil)
		for err == unix.EINTR {
			got, err = unix.Wait4(pid, &ws, unix.WNOHANG, nil)
		}
		switch {
		case err == unix.ECHILD:
			r.log.Error("child reaped by someone else; its status is lost", "pid", pid)
			r.deliver(pid, 0, false)
		case err == nil && got == pid:
			r.deliver(pid, ws, true)
		}
	}
}

// deliver hands pid's status to its waiter, if it has one.
func (r *Reaper) deliver(pid int, ws unix.WaitStatus, ok bool) {
	r.mu.Lock()
	ch := r.waiters[pid]
	delete(r.waiters, pid)
	r.mu.Unlock()
	if ch == nil {
		r.log.Debug("reaped orphan", "pid", pid, "status", describeStatus(ws))
		return
	}
	if ok {
		ch <- ws
	}
	close(ch)
}
