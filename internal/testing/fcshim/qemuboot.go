package fcshim

import (
	"context"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"syscall"

	"golang.org/x/sys/unix"

	"banger/internal/daemon/qemu"
)

// QEMUBooter boots a BootConfig under banger's QEMU backend.
type QEMUBooter struct {
	// Dir holds QEMU's QMP socket and the console FIFO; keep it short (a
	// unix socket path fits in 107 bytes).
	Dir string
	// Console receives the guest's serial console, as Firecracker's
	// stdout does.
	Console io.Writer
	// QEMU is the QEMU executable; qemu.DefaultBinary when empty.
	QEMU string
	// Wrapper, when set, is run in QEMU's place and execs it (see
	// execQEMU): the shim's own executable, so that QEMU gets a
	// parent-death signal and never outlives the shim.
	Wrapper string
}

var _ Booter = (*QEMUBooter)(nil)

// ctrlAltDel is QMP send-key's argument for ctrl-alt-delete, the key
// press Firecracker's SendCtrlAltDel makes on its emulated i8042.
var ctrlAltDel = map[string]any{"keys": []map[string]string{
	{"type": "qcode", "data": "ctrl"},
	{"type": "qcode", "data": "alt"},
	{"type": "qcode", "data": "delete"},
}}

// Boot starts QEMU with cfg. The serial console goes to a FIFO that a
// goroutine copies to b.Console until QEMU exits.
func (b *QEMUBooter) Boot(ctx context.Context, cfg BootConfig) (VM, error) {
	fifo := filepath.Join(b.Dir, "console")
	os.Remove(fifo)
	if err := unix.Mkfifo(fifo, 0o600); err != nil {
		return nil, fmt.Errorf("console FIFO: %w", err)
	}
	// The read end first (non-blocking, so this open does not wait for a
	// writer), then a write end of our own, held until QEMU exits: a FIFO
	// read returns EOF whenever no writer has it open.
	r, err := os.OpenFile(fifo, os.O_RDONLY|syscall.O_NONBLOCK, 0)
	if err != nil {
		return nil, fmt.Errorf("console FIFO: %w", err)
	}
	keep, err := os.OpenFile(fifo, os.O_WRONLY, 0)
	if err != nil {
		r.Close()
		return nil, fmt.Errorf("console FIFO: %w", err)
	}
	copied := make(chan struct{})
	go func() {
		io.Copy(b.Console, r)
		r.Close()
		close(copied)
	}()

	qcfg := qemu.Config{
		ID:         cfg.ID,
		Binary:     b.QEMU,
		Kernel:     cfg.Kernel,
		Initrd:     cfg.Initrd,
		Cmdline:    cfg.Cmdline,
		VCPUs:      cfg.VCPUs,
		MemoryMiB:  cfg.MemoryMiB,
		ConsoleLog: fifo,
		QMPSocket:  filepath.Join(b.Dir, "qmp.sock"),
	}
	for _, d := range cfg.Drives {
		qcfg.Disks = append(qcfg.Disks, qemu.Disk{Path: d.Path, ReadOnly: d.ReadOnly})
	}
	for _, n := range cfg.NICs {
		qcfg.NICs = append(qcfg.NICs, qemu.NIC{TAP: n.TAP, MAC: n.MAC, File: n.File})
	}
	if b.Wrapper != "" {
		bin := b.QEMU
		if bin == "" {
			bin = qemu.DefaultBinary
		}
		path, err := exec.LookPath(bin)
		if err != nil {
			keep.Close()
			<-copied
			return nil, fmt.Errorf("QEMU %s: %w", bin, err)
		}
		// qemu.Start runs Binary with this process's environment: these
		// tell the wrapper which QEMU to exec and which parent to watch.
		os.Setenv(envExecQEMU, path)
		os.Setenv(envParentPID, strconv.Itoa(os.Getpid()))
		qcfg.Binary = b.Wrapper
	}
	p, err := qemu.Start(ctx, qcfg)
	if err != nil {
		keep.Close()
		<-copied
		return nil, err
	}
	vm := &qemuVM{p: p, done: make(chan struct{})}
	go func() {
		<-p.Done()
		keep.Close()
		<-copied
		close(vm.done)
	}()
	return vm, nil
}

// qemuVM is a guest QEMUBooter booted.
type qemuVM struct {
	p    *qemu.Process
	done chan struct{} // closed when QEMU has exited and the console is drained
}

var _ VM = (*qemuVM)(nil)

func (v *qemuVM) SendCtrlAltDel(ctx context.Context) error {
	_, err := v.p.QMP(ctx, "send-key", ctrlAltDel)
	return err
}

func (v *qemuVM) Kill() error           { return v.p.Kill() }
func (v *qemuVM) Done() <-chan struct{} { return v.done }
func (v *qemuVM) Output() string        { return v.p.Output() }

func (v *qemuVM) Wait() (int, error) {
	<-v.done
	return v.p.Wait()
}
