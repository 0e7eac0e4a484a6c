package store

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"time"
)

// OperationState is where an async operation is.
type OperationState string

const (
	OpRunning   OperationState = "running"
	OpSucceeded OperationState = "succeeded"
	OpFailed    OperationState = "failed"
	OpCanceled  OperationState = "canceled"
	// OpInterrupted: the daemon stopped (crashed, restarted) while the
	// operation ran; set at the next start by MarkRunningOperationsInterrupted.
	OpInterrupted OperationState = "interrupted"
)

// Done reports whether s is a final state.
func (s OperationState) Done() bool { return s != OpRunning }

// interruptedMessage is the Error of an operation the daemon lost.
const interruptedMessage = "interrupted: the daemon stopped while it ran; check the target and retry"

// Operation is the durable record of an async operation (vm.create,
// image.pull, ...): its progress for the CLI while it runs, its outcome
// after. In-memory progress lives in opstate; this is what survives a
// restart.
type Operation struct {
	ID         string
	Kind       string // e.g. "vm.create", "image.pull"
	Target     string // what it acts on: a VM or image name or ID
	State      OperationState
	Phase      string // current named phase, e.g. "disk", "boot"
	Error      string // why it failed, for failed/canceled/interrupted
	Result     json.RawMessage
	CreatedAt  time.Time
	UpdatedAt  time.Time
	FinishedAt time.Time // zero while running
}

const operationCols = `id, kind, target, state, phase, error, result_json, created_at, updated_at, finished_at`

func scanOperation(r rowScanner) (Operation, error) {
	var op Operation
	err := r.Scan(&op.ID, &op.Kind, &op.Target, &op.State, &op.Phase, &op.Error, rawScan{&op.Result},
		timeScan{&op.CreatedAt}, timeScan{&op.UpdatedAt}, timeScan{&op.FinishedAt})
	return op, err
}

// finishedAt is the finished_at to store for op: NULL while running, else
// op.FinishedAt or, if unset, now.
func finishedAt(op Operation, now time.Time) any {
	if !op.State.Done() {
		return nil
	}
	if op.FinishedAt.IsZero() {
		return encodeTime(now)
	}
	return encodeTime(op.FinishedAt)
}

// CreateOperation records op, giving it a new ID if it has none and State
// running if unset, and returns the stored record.
func (q *queries) CreateOperation(ctx context.Context, op Operation) (Operation, error) {
	if op.ID == "" {
		op.ID = NewID()
	}
	if op.State == "" {
		op.State = OpRunning
	}
	now := q.now()
	got, err := scanOperation(q.w.QueryRowContext(ctx, `
		INSERT INTO operations (`+operationCols+`) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
		RETURNING `+operationCols,
		op.ID, op.Kind, op.Target, op.State, op.Phase, op.Error, nullJSON(op.Result),
		encodeTime(now), encodeTime(now), finishedAt(op, now)))
	if _, ok := uniqueViolation(err); ok {
		return Operation{}, fmt.Errorf("operation %q: %w", op.ID, ErrAlreadyExists)
	}
	if err != nil {
		return Operation{}, invalidValue(fmt.Sprintf("create operation %s", op.Kind), err)
	}
	return got, nil
}

// UpdateOperation writes op's State, Phase, Error and Result, bumps
// UpdatedAt, and returns the stored record. Moving to a final state sets
// FinishedAt (to op.FinishedAt if given, else now); running clears it.
func (q *queries) UpdateOperation(ctx context.Context, op Operation) (Operation, error) {
	now := q.now()
	got, err := scanOperation(q.w.QueryRowContext(ctx, `
		UPDATE operations SET state = ?, phase = ?, error = ?, result_json = ?, updated_at = ?, finished_at = ?
		WHERE id = ?
		RETURNING `+operationCols,
		op.State, op.Phase, op.Error, nullJSON(op.Result), encodeTime(now), finishedAt(op, now), op.ID))
	if errors.Is(err, sql.ErrNoRows) {
		return Operation{}, fmt.Errorf("operation %q: %w", op.ID, ErrNotFound)
	}
	if err != nil {
		return Operation{}, invalidValue(fmt.Sprintf("update operation %q", op.ID), err)
	}
	return got, nil
}

// GetOperation returns the operation with ID id.
func (q *queries) GetOperation(ctx context.Context, id string) (Operation, error) {
	op, err := scanOperation(q.r.QueryRowContext(ctx,
		`SELECT `+operationCols+` FROM operations WHERE id = ?`, id))
	if errors.Is(err, sql.ErrNoRows) {
		return Operation{}, fmt.Errorf("operation %q: %w", id, ErrNotFound)
	}
	if err != nil {
		return Operation{}, fmt.Errorf("get operation %q: %w", id, err)
	}
	return op, nil
}

// ListOperations returns every operation, oldest first.
func (q *queries) ListOperations(ctx context.Context) ([]Operation, error) {
	rows, err := q.r.QueryContext(ctx, `SELECT `+operationCols+` FROM operations ORDER BY created_at, id`)
	if err != nil {
		return nil, fmt.Errorf("list operations: %w", err)
	}
	defer rows.Close()
	var out []Operation
	for rows.Next() {
		op, err := scanOperation(rows)
		if err != nil {
			return nil, fmt.Errorf("list operations: %w", err)
		}
		out = append(out, op)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("list operations: %w", err)
	}
	return out, nil
}

// MarkRunningOperationsInterrupted marks every running operation
// interrupted and finished now, and returns how many there were. The
// daemon calls it at start, before it runs any operation: whatever was
// running then was cut short by the previous daemon's end.
func (q *queries) MarkRunningOperationsInterrupted(ctx context.Context) (int, error) {
	now := encodeTime(q.now())
	res, err := q.w.ExecContext(ctx, `
		UPDATE operations SET state = 'interrupted', updated_at = ?1, finished_at = ?1,
			error = CASE WHEN error = '' THEN ?2 ELSE error END
		WHERE state = 'running'`, now, interruptedMessage)
	if err != nil {
		return 0, fmt.Errorf("mark running operations interrupted: %w", err)
	}
	n, err := res.RowsAffected()
	if err != nil {
		return 0, fmt.Errorf("mark running operations interrupted: %w", err)
	}
	return int(n), nil
}

// DeleteOperationsFinishedBefore forgets operations that finished before t
// and returns how many. Running operations are never deleted.
func (q *queries) DeleteOperationsFinishedBefore(ctx context.Context, t time.Time) (int, error) {
	res, err := q.w.ExecContext(ctx,
		`DELETE FROM operations WHERE finished_at IS NOT NULL AND finished_at < ?`, encodeTime(t))
	if err != nil {
		return 0, fmt.Errorf("delete old operations: %w", err)
	}
	n, err := res.RowsAffected()
	if err != nil {
		return 0, fmt.Errorf("delete old operations: %w", err)
	}
	return int(n), nil
}
