package store

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"time"
)

// VMState is a VM's lifecycle state as the daemon last recorded it.
type VMState string

const (
	VMCreated  VMState = "created"
	VMStarting VMState = "starting"
	VMRunning  VMState = "running"
	VMStopping VMState = "stopping"
	VMStopped  VMState = "stopped"
	VMError    VMState = "error" // StateReason says why
)

// VMM names a virtual machine monitor backend.
type VMM string

const (
	VMMFirecracker VMM = "firecracker"
	VMMQEMU        VMM = "qemu"
)

// VM is a VM's durable record: its intent and configuration. Transient host
// handles (PID, TAP, loop devices, dm target) are deliberately absent; they
// live in the VM's handles.json. The guest IP is in ip_allocations.
type VM struct {
	ID           string
	Name         string
	ImageID      string
	KernelID     string // "" boots the image's default kernel
	State        VMState
	StateReason  string
	VCPUs        int
	MemoryMiB    int
	DiskBytes    int64
	VMM          VMM
	DiskStrategy string // how the COW disk was made; named by the daemon
	MAC          string // unique among VMs when set
	// Options holds per-VM settings owned by the daemon that must survive
	// restarts (e.g. run the image's entrypoint); a JSON object. nil is {}.
	Options   json.RawMessage
	CreatedAt time.Time
	UpdatedAt time.Time
	StartedAt time.Time // when it last became running; zero if never
}

var vms = table[VM]{
	kind: "vm",
	name: "vms",
	cols: `id, name, image_id, kernel_id, state, state_reason, vcpus, memory_mib, disk_bytes,
		vmm, disk_strategy, mac, options_json, created_at, updated_at, started_at`,
	scan: func(r rowScanner) (VM, error) {
		var vm VM
		err := r.Scan(&vm.ID, &vm.Name, &vm.ImageID, stringScan{&vm.KernelID}, &vm.State, &vm.StateReason,
			&vm.VCPUs, &vm.MemoryMiB, &vm.DiskBytes, &vm.VMM, &vm.DiskStrategy, &vm.MAC, rawScan{&vm.Options},
			timeScan{&vm.CreatedAt}, timeScan{&vm.UpdatedAt}, timeScan{&vm.StartedAt})
		return vm, err
	},
	key: func(vm VM) (string, string) { return vm.ID, vm.Name },
}

// options is how VM.Options is stored: nil as an empty object.
func options(m json.RawMessage) string {
	if len(m) == 0 {
		return "{}"
	}
	return string(m)
}

// CreateVM records vm, giving it a new ID if it has none, State created if
// unset, and fresh CreatedAt and UpdatedAt, and returns the stored record.
// A taken name (or MAC) is ErrAlreadyExists; a missing image or kernel is
// ErrNotFound naming it.
func (q *queries) CreateVM(ctx context.Context, vm VM) (VM, error) {
	if vm.ID == "" {
		vm.ID = NewID()
	}
	if vm.State == "" {
		vm.State = VMCreated
	}
	now := encodeTime(q.now())
	got, err := vms.scan(q.w.QueryRowContext(ctx, `
		INSERT INTO vms (id, name, image_id, kernel_id, state, state_reason, vcpus, memory_mib, disk_bytes,
			vmm, disk_strategy, mac, options_json, created_at, updated_at, started_at)
		VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
		RETURNING `+vms.cols,
		vm.ID, vm.Name, vm.ImageID, nullString(vm.KernelID), vm.State, vm.StateReason, vm.VCPUs, vm.MemoryMiB,
		vm.DiskBytes, vm.VMM, vm.DiskStrategy, vm.MAC, options(vm.Options), now, now, nullTime(vm.StartedAt)))
	if err != nil {
		return VM{}, q.vmWriteError(ctx, "create", vm, err)
	}
	return got, nil
}

// GetVM returns the VM with ID id.
func (q *queries) GetVM(ctx context.Context, id string) (VM, error) {
	return vms.get(ctx, q.r, "id", id)
}

// GetVMByName returns the VM named name.
func (q *queries) GetVMByName(ctx context.Context, name string) (VM, error) {
	return vms.get(ctx, q.r, "name", name)
}

// ResolveVM finds the VM a user means by ref: the one named ref, else the
// one with ID ref, else the only one whose ID starts with ref. A prefix of
// several IDs is ErrInvalidArgument listing their names; no match is
// ErrNotFound.
func (q *queries) ResolveVM(ctx context.Context, ref string) (VM, error) {
	return vms.resolve(ctx, q.r, ref)
}

// ListVMs returns every VM, oldest first.
func (q *queries) ListVMs(ctx context.Context) ([]VM, error) {
	return vms.list(ctx, q.r, "")
}

// UpdateVM writes vm's mutable fields (everything but ID, ImageID and
// CreatedAt) to the VM with ID vm.ID, bumps UpdatedAt, and returns the
// stored record.
func (q *queries) UpdateVM(ctx context.Context, vm VM) (VM, error) {
	got, err := vms.scan(q.w.QueryRowContext(ctx, `
		UPDATE vms SET name = ?, kernel_id = ?, state = ?, state_reason = ?, vcpus = ?, memory_mib = ?,
			disk_bytes = ?, vmm = ?, disk_strategy = ?, mac = ?, options_json = ?, updated_at = ?, started_at = ?
		WHERE id = ?
		RETURNING `+vms.cols,
		vm.Name, nullString(vm.KernelID), vm.State, vm.StateReason, vm.VCPUs, vm.MemoryMiB,
		vm.DiskBytes, vm.VMM, vm.DiskStrategy, vm.MAC, options(vm.Options), encodeTime(q.now()),
		nullTime(vm.StartedAt), vm.ID))
	if err != nil {
		return VM{}, q.vmWriteError(ctx, "update", vm, err)
	}
	return got, nil
}

// SetVMState sets the state of VM id and why, and returns the stored
// record. Entering VMRunning also sets StartedAt to now.
func (q *queries) SetVMState(ctx context.Context, id string, state VMState, reason string) (VM, error) {
	now := encodeTime(q.now())
	got, err := vms.scan(q.w.QueryRowContext(ctx, `
		UPDATE vms SET state = ?1, state_reason = ?2, updated_at = ?3,
			started_at = CASE WHEN ?1 = 'running' THEN ?3 ELSE started_at END
		WHERE id = ?4
		RETURNING `+vms.cols,
		state, reason, now, id))
	if errors.Is(err, sql.ErrNoRows) {
		return VM{}, fmt.Errorf("vm %q: %w", id, ErrNotFound)
	}
	if err != nil {
		return VM{}, invalidValue(fmt.Sprintf("set state of vm %q", id), err)
	}
	return got, nil
}

// DeleteVM removes the VM with ID id, with its IP allocation and workspace.
func (q *queries) DeleteVM(ctx context.Context, id string) error {
	res, err := q.w.ExecContext(ctx, `DELETE FROM vms WHERE id = ?`, id)
	if err != nil {
		return fmt.Errorf("delete vm %q: %w", id, err)
	}
	return mustAffect(res, "vm", id)
}

// vmWriteError maps the failure of an insert or update of vm.
func (q *queries) vmWriteError(ctx context.Context, verb string, vm VM, err error) error {
	if errors.Is(err, sql.ErrNoRows) {
		return fmt.Errorf("vm %q: %w", vm.ID, ErrNotFound)
	}
	if col, ok := uniqueViolation(err); ok {
		switch col {
		case "vms.name":
			return fmt.Errorf("vm name %q: %w", vm.Name, ErrAlreadyExists)
		case "vms.mac":
			return fmt.Errorf("vm %q: mac %s: %w", vm.Name, vm.MAC, ErrAlreadyExists)
		}
		return fmt.Errorf("vm id %q: %w", vm.ID, ErrAlreadyExists)
	}
	if isForeignKeyViolation(err) {
		if vm.ImageID != "" {
			if _, ierr := q.GetImage(ctx, vm.ImageID); ierr != nil {
				return fmt.Errorf("%s vm %q: %w", verb, vm.Name, ierr)
			}
		}
		if vm.KernelID != "" {
			if _, kerr := q.GetKernel(ctx, vm.KernelID); kerr != nil {
				return fmt.Errorf("%s vm %q: %w", verb, vm.Name, kerr)
			}
		}
	}
	return invalidValue(fmt.Sprintf("%s vm %q", verb, vm.Name), err)
}
