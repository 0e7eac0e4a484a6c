package daemon

import (
	"context"
	"errors"
	"io"
	"os"
	"time"

	"banger/internal/rpc"
)

// logs streams a VM's serial console as stdout events: what is there, and
// with Follow what comes after, until the caller goes away. No lock: the
// console is a file the VMM appends to.
func (m *vmManager) logs(ctx context.Context, call *rpc.Call) (struct{}, error) {
	var p rpc.VMLogsParams
	if err := call.Bind(&p); err != nil {
		return struct{}{}, err
	}
	if p.Ref == "" {
		return struct{}{}, rpc.Errorf(rpc.CodeInvalidParams, "invalid params for %s: ref is required", call.Method)
	}
	vm, err := m.store.ResolveVM(ctx, p.Ref)
	if err != nil {
		return struct{}{}, err
	}
	w := &eventWriter{call: call, kind: rpc.EventStdout}
	path := m.layout.VMConsoleLog(vm.ID)
	var off int64
	for {
		n, err := copyFrom(path, off, w)
		off += n
		if err != nil && !errors.Is(err, os.ErrNotExist) {
			return struct{}{}, err
		}
		if !p.Follow {
			return struct{}{}, nil
		}
		// A VMM started again truncates its console: start over.
		if fi, err := os.Stat(path); err == nil && fi.Size() < off {
			off = 0
		}
		select {
		case <-ctx.Done():
			return struct{}{}, nil
		case <-time.After(200 * time.Millisecond):
		}
	}
}

// copyFrom copies path from off to w and returns the bytes copied.
func copyFrom(path string, off int64, w io.Writer) (int64, error) {
	f, err := os.Open(path)
	if err != nil {
		return 0, err
	}
	defer f.Close()
	if _, err := f.Seek(off, io.SeekStart); err != nil {
		return 0, err
	}
	return io.Copy(w, f)
}
