package store

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"time"
)

// Workspace records the checkout a VM's workspace was prepared from, so
// that export knows the base to diff the guest's work against. One per VM;
// deleting the VM deletes it.
type Workspace struct {
	VMID       string
	HostPath   string // the checkout's root on the host
	GuestDest  string // where it was copied in the guest, e.g. /workspace
	BaseCommit string // HEAD at prepare time
	Branch     string // the checkout's branch at prepare time, "" if detached
	// Manifest is what the workspace package recorded of the copy (files,
	// dirty state); the store only checks it is JSON. nil is none.
	Manifest   json.RawMessage
	PreparedAt time.Time
}

const workspaceCols = `vm_id, host_path, guest_dest, base_commit, branch, manifest_json, prepared_at`

func scanWorkspace(r rowScanner) (Workspace, error) {
	var w Workspace
	err := r.Scan(&w.VMID, &w.HostPath, &w.GuestDest, &w.BaseCommit, &w.Branch,
		rawScan{&w.Manifest}, timeScan{&w.PreparedAt})
	return w, err
}

// PutWorkspace records w as VM w.VMID's workspace, replacing any earlier
// one (prepare may run again), and returns the stored record. A zero
// PreparedAt is set to now. An unknown VM is ErrNotFound.
func (q *queries) PutWorkspace(ctx context.Context, w Workspace) (Workspace, error) {
	if w.PreparedAt.IsZero() {
		w.PreparedAt = q.now()
	}
	got, err := scanWorkspace(q.w.QueryRowContext(ctx, `
		INSERT INTO workspaces (`+workspaceCols+`) VALUES (?, ?, ?, ?, ?, ?, ?)
		ON CONFLICT (vm_id) DO UPDATE SET host_path = excluded.host_path,
			guest_dest = excluded.guest_dest, base_commit = excluded.base_commit,
			branch = excluded.branch, manifest_json = excluded.manifest_json,
			prepared_at = excluded.prepared_at
		RETURNING `+workspaceCols,
		w.VMID, w.HostPath, w.GuestDest, w.BaseCommit, w.Branch, nullJSON(w.Manifest), encodeTime(w.PreparedAt)))
	if isForeignKeyViolation(err) {
		return Workspace{}, fmt.Errorf("workspace: vm %q: %w", w.VMID, ErrNotFound)
	}
	if err != nil {
		return Workspace{}, invalidValue(fmt.Sprintf("put workspace of vm %q", w.VMID), err)
	}
	return got, nil
}

// GetWorkspace returns VM vmID's workspace.
func (q *queries) GetWorkspace(ctx context.Context, vmID string) (Workspace, error) {
	w, err := scanWorkspace(q.r.QueryRowContext(ctx,
		`SELECT `+workspaceCols+` FROM workspaces WHERE vm_id = ?`, vmID))
	if errors.Is(err, sql.ErrNoRows) {
		return Workspace{}, fmt.Errorf("workspace of vm %q: %w", vmID, ErrNotFound)
	}
	if err != nil {
		return Workspace{}, fmt.Errorf("get workspace of vm %q: %w", vmID, err)
	}
	return w, nil
}

// DeleteWorkspace forgets VM vmID's workspace.
func (q *queries) DeleteWorkspace(ctx context.Context, vmID string) error {
	res, err := q.w.ExecContext(ctx, `DELETE FROM workspaces WHERE vm_id = ?`, vmID)
	if err != nil {
		return fmt.Errorf("delete workspace of vm %q: %w", vmID, err)
	}
	return mustAffect(res, "workspace of vm", vmID)
}
