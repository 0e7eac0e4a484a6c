package cli

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"banger/internal/errdefs"
	"banger/internal/rpc"
)

// fakeRun is how the fake daemon behaves.
type fakeRun struct {
	createFails bool  // the create op ends failed
	watchBlocks bool  // the first op.watch interrupts the CLI and waits for it to go away
	execCode    int   // vm.exec's exit status
	rmErr       error // vm.rm's error for a VM that exists
}

// fakeRunDaemon answers what `banger run` calls: vm.create, op.watch,
// op.cancel, vm.exec and vm.rm, and records the calls.
type fakeRunDaemon struct {
	fakeRun
	interrupt func() // the CLI's Ctrl-C

	mu        sync.Mutex
	calls     []string
	execArgv  []string
	removed   []rpc.VMRemoveParams
	vmExists  bool
	cancelled bool
}

func (f *fakeRunDaemon) serve(ctx context.Context, call *rpc.Call) (any, error) {
	f.mu.Lock()
	f.calls = append(f.calls, call.Method)
	watches := 0
	for _, c := range f.calls {
		if c == rpc.MethodOpWatch {
			watches++
		}
	}
	f.mu.Unlock()
	vm := rpc.VM{ID: "0123456789abcdef", Name: "r1", State: "running"}
	switch call.Method {
	case rpc.MethodVMCreate:
		f.mu.Lock()
		f.vmExists = true
		f.mu.Unlock()
		return rpc.VMStarted{OpID: "op1", VM: vm}, nil
	case rpc.MethodOpWatch:
		op := rpc.Op{ID: "op1", Kind: "vm.create", Target: vm.Name, State: "succeeded"}
		if f.watchBlocks && watches == 1 {
			f.interrupt()
			<-ctx.Done()
			return nil, ctx.Err()
		}
		f.mu.Lock()
		defer f.mu.Unlock()
		switch {
		case f.cancelled:
			op.State, op.Error, f.vmExists = "cancelled", "context canceled", false
		case f.createFails:
			op.State, op.Error, f.vmExists = "failed", "boot: boom", false
		default:
			op.Result, _ = json.Marshal(vm)
		}
		return op, nil
	case rpc.MethodOpCancel:
		f.mu.Lock()
		f.cancelled = true
		f.mu.Unlock()
		return nil, nil
	case rpc.MethodVMExec:
		var p rpc.VMExecParams
		if err := call.Bind(&p); err != nil {
			return nil, err
		}
		f.mu.Lock()
		f.execArgv = p.Argv
		f.mu.Unlock()
		call.Send(rpc.EventStdout, []byte("hi\n"))
		return rpc.VMExecResult{ExitCode: f.execCode}, nil
	case rpc.MethodVMRemove:
		var p rpc.VMRemoveParams
		if err := call.Bind(&p); err != nil {
			return nil, err
		}
		f.mu.Lock()
		defer f.mu.Unlock()
		f.removed = append(f.removed, p)
		if !f.vmExists {
			return nil, fmt.Errorf("vm %q: %w", p.Ref, errdefs.ErrNotFound)
		}
		return nil, f.rmErr
	}
	return nil, rpc.Errorf(rpc.CodeMethodNotFound, "method %q not found", call.Method)
}

func TestRun(t *testing.T) {
	removedVM := []rpc.VMRemoveParams{{Ref: "0123456789abcdef", Force: true}}
	for _, tc := range []struct {
		name        string
		fake        fakeRun
		args        []string
		wantCode    int
		wantStdout  string
		wantStderr  []string
		wantArgv    []string
		wantRemoved []rpc.VMRemoveParams
		wantCancel  bool
	}{
		{
			name: "rm after the command; its exit status", fake: fakeRun{execCode: 4},
			args:     []string{"--rm", "--image", "probe", "--", "/bin/probe", "exit", "4"},
			wantCode: 4, wantStdout: "hi\n", wantArgv: []string{"/bin/probe", "exit", "4"}, wantRemoved: removedVM,
		},
		{
			name: "without rm the VM stays", fake: fakeRun{execCode: 4},
			args:     []string{"--image", "probe", "--name", "keep", "--", "/bin/probe", "exit", "4"},
			wantCode: 4, wantStdout: "hi\n", wantArgv: []string{"/bin/probe", "exit", "4"},
		},
		{
			name: "flags end at the command", fake: fakeRun{},
			args:     []string{"--image", "probe", "/bin/probe", "--rm", "-x"},
			wantCode: 0, wantStdout: "hi\n", wantArgv: []string{"/bin/probe", "--rm", "-x"},
		},
		{
			name: "a failed create is removed quietly", fake: fakeRun{createFails: true},
			args:     []string{"--rm", "--image", "probe", "--", "true"},
			wantCode: 1, wantStderr: []string{"boom"}, wantRemoved: removedVM,
		},
		{
			name: "a failed removal is reported and fails the run", fake: fakeRun{rmErr: fmt.Errorf("vm r1: %w", errdefs.ErrBusy)},
			args:     []string{"--rm", "--image", "probe", "--", "true"},
			wantCode: 1, wantStdout: "hi\n", wantArgv: []string{"true"}, wantRemoved: removedVM,
			wantStderr: []string{"remove vm r1", "banger rm --force r1"},
		},
		{
			name: "Ctrl-C during the create cancels it with rm", fake: fakeRun{watchBlocks: true},
			args:     []string{"--rm", "--image", "probe", "--", "true"},
			wantCode: 130, wantStderr: []string{"cancelling operation op1"}, wantRemoved: removedVM, wantCancel: true,
		},
		{
			name: "Ctrl-C during the create without rm leaves it running", fake: fakeRun{watchBlocks: true},
			args:     []string{"--image", "probe", "--", "true"},
			wantCode: 130, wantStderr: []string{"goes on in the daemon"},
		},
		{
			name: "no image", args: []string{"--", "true"},
			wantCode: 1, wantStderr: []string{"--image is required", "banger image ls"},
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			isolate(t)
			ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
			defer cancel()
			f := &fakeRunDaemon{fakeRun: tc.fake, interrupt: cancel}
			sock := serveFake(t, f.serve)
			var out, errOut bytes.Buffer
			code := run(ctx, append([]string{"run", "--socket", sock, "--no-workspace"}, tc.args...), &out, &errOut)
			if code != tc.wantCode || out.String() != tc.wantStdout {
				t.Errorf("run exited %d with stdout %q; want %d, %q (stderr %q)", code, out.String(), tc.wantCode, tc.wantStdout, errOut.String())
			}
			for _, want := range tc.wantStderr {
				if !strings.Contains(errOut.String(), want) {
					t.Errorf("stderr %q does not contain %q", errOut.String(), want)
				}
			}
			if len(tc.wantStderr) == 0 && strings.Contains(errOut.String(), "banger:") {
				t.Errorf("stderr has an error: %q", errOut.String())
			}
			f.mu.Lock()
			defer f.mu.Unlock()
			if !slices.Equal(f.execArgv, tc.wantArgv) {
				t.Errorf("vm.exec argv %q, want %q", f.execArgv, tc.wantArgv)
			}
			if !slices.Equal(f.removed, tc.wantRemoved) {
				t.Errorf("vm.rm calls %+v, want %+v", f.removed, tc.wantRemoved)
			}
			if f.cancelled != tc.wantCancel {
				t.Errorf("op.cancel called: %v, want %v", f.cancelled, tc.wantCancel)
			}
		})
	}
}
