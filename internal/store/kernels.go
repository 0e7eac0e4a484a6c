package store

import (
	"context"
	"fmt"
	"strings"
	"time"
)

// Kernel is a guest kernel: kernels/ID/vmlinux and, if HasInitrd,
// kernels/ID/initrd.img. Kernels are immutable once imported.
type Kernel struct {
	ID        string
	Name      string
	Version   string
	Source    string // the file path or bundle URL it was imported from
	HasInitrd bool
	Default   bool // at most one kernel is the default
	CreatedAt time.Time
}

var kernels = table[Kernel]{
	kind: "kernel",
	name: "kernels",
	cols: `id, name, version, source, has_initrd, is_default, created_at`,
	scan: func(r rowScanner) (Kernel, error) {
		var k Kernel
		err := r.Scan(&k.ID, &k.Name, &k.Version, &k.Source, &k.HasInitrd, &k.Default, timeScan{&k.CreatedAt})
		return k, err
	},
	key: func(k Kernel) (string, string) { return k.ID, k.Name },
}

// CreateKernel records k (never as the default: see SetDefaultKernel), giving it a new ID if it has none and setting
// CreatedAt, and returns the stored record. A taken name or ID is
// ErrAlreadyExists.
func (q *queries) CreateKernel(ctx context.Context, k Kernel) (Kernel, error) {
	if k.ID == "" {
		k.ID = NewID()
	}
	k.CreatedAt = q.now()
	got, err := kernels.scan(q.w.QueryRowContext(ctx, `
		INSERT INTO kernels (id, name, version, source, has_initrd, is_default, created_at)
		VALUES (?, ?, ?, ?, ?, 0, ?)
		RETURNING `+kernels.cols,
		k.ID, k.Name, k.Version, k.Source, k.HasInitrd, encodeTime(k.CreatedAt)))
	if col, ok := uniqueViolation(err); ok {
		if col == "kernels.name" {
			return Kernel{}, fmt.Errorf("kernel name %q: %w", k.Name, ErrAlreadyExists)
		}
		return Kernel{}, fmt.Errorf("kernel id %q: %w", k.ID, ErrAlreadyExists)
	}
	if err != nil {
		return Kernel{}, invalidValue(fmt.Sprintf("create kernel %q", k.Name), err)
	}
	return got, nil
}

// GetKernel returns the kernel with ID id.
func (q *queries) GetKernel(ctx context.Context, id string) (Kernel, error) {
	return kernels.get(ctx, q.r, "id", id)
}

// GetKernelByName returns the kernel named name.
func (q *queries) GetKernelByName(ctx context.Context, name string) (Kernel, error) {
	return kernels.get(ctx, q.r, "name", name)
}

// ResolveKernel finds a kernel by exact name, exact ID, or unique ID prefix.
func (q *queries) ResolveKernel(ctx context.Context, ref string) (Kernel, error) {
	return kernels.resolve(ctx, q.r, ref)
}

// ListKernels returns every kernel, oldest first.
func (q *queries) ListKernels(ctx context.Context) ([]Kernel, error) {
	return kernels.list(ctx, q.r, "")
}

// SetDefaultKernel makes kernel id the default, and no other. Use it in a
// Tx with the kernel's creation to make both atomic.
func (q *queries) SetDefaultKernel(ctx context.Context, id string) error {
	if _, err := q.GetKernel(ctx, id); err != nil {
		return err
	}
	if _, err := q.w.ExecContext(ctx, `UPDATE kernels SET is_default = 0 WHERE is_default = 1 AND id <> ?`, id); err != nil {
		return fmt.Errorf("clear default kernel: %w", err)
	}
	res, err := q.w.ExecContext(ctx, `UPDATE kernels SET is_default = 1 WHERE id = ?`, id)
	if err != nil {
		return fmt.Errorf("set default kernel %q: %w", id, err)
	}
	return mustAffect(res, "kernel", id)
}

// DefaultKernel returns the default kernel, ErrNotFound when there is none.
func (q *queries) DefaultKernel(ctx context.Context) (Kernel, error) {
	ks, err := kernels.list(ctx, q.r, "is_default = 1")
	if err != nil {
		return Kernel{}, err
	}
	if len(ks) == 0 {
		return Kernel{}, fmt.Errorf("default kernel: %w (import one with `banger kernel import --default` or `banger kernel fetch --default`)", ErrNotFound)
	}
	return ks[0], nil
}

// DeleteKernel removes the kernel with ID id. A kernel that an image has as
// its default or that a VM boots is ErrBusy, naming them.
func (q *queries) DeleteKernel(ctx context.Context, id string) error {
	res, err := q.w.ExecContext(ctx, `DELETE FROM kernels WHERE id = ?`, id)
	if isForeignKeyViolation(err) {
		return q.kernelBusy(ctx, id)
	}
	if err != nil {
		return fmt.Errorf("delete kernel %q: %w", id, err)
	}
	return mustAffect(res, "kernel", id)
}

// kernelBusy explains which records hold kernel id.
func (q *queries) kernelBusy(ctx context.Context, id string) error {
	k, err := q.GetKernel(ctx, id)
	if err != nil {
		return err
	}
	var users []string
	ims, err := images.list(ctx, q.r, "default_kernel_id = ?", id)
	if err != nil {
		return err
	}
	for _, im := range ims {
		users = append(users, fmt.Sprintf("image %q", im.Name))
	}
	vs, err := vms.list(ctx, q.r, "kernel_id = ?", id)
	if err != nil {
		return err
	}
	for _, vm := range vs {
		users = append(users, fmt.Sprintf("vm %q", vm.Name))
	}
	return errorf(ErrBusy, "kernel %q is used by %s: delete %s or give %s another kernel first",
		k.Name, strings.Join(users, ", "), pronoun(len(users)), pronoun(len(users)))
}
