package cluster

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sync"
	"time"

	"github.com/hashicorp/raft"
	raftboltdb "github.com/hashicorp/raft-boltdb/v2"
	"go.etcd.io/bbolt"
	bberrors "go.etcd.io/bbolt/errors"

	"github.com/sorad/sorad/fsm"
)

// instance is one running Raft node with its stores, transport and state
// machine. A node normally keeps one instance for its whole life; joining
// another cluster replaces it with a fresh one.
type instance struct {
	raft      *raft.Raft
	fsm       *fsm.FSM
	applied   *appliedNotifier
	store     *raftboltdb.BoltStore
	transport *raft.NetworkTransport
	layer     *raftStreamLayer
	onChange  func() // called after every change of the state machine
}

// raftDir is where an instance keeps its log, stable store and snapshots.
func raftDir(dataDir string) string { return filepath.Join(dataDir, "raft") }

// openInstance opens (or creates) the Raft state in dataDir and starts Raft.
// When bootstrap is true and there is no existing state, the node forms a
// one-node cluster of itself.
func (c *Cluster) openInstance(bootstrap bool) (*instance, error) {
	dir := raftDir(c.cfg.DataDir)
	if err := os.MkdirAll(filepath.Join(dir, "snapshots"), 0o750); err != nil {
		return nil, fmt.Errorf("create raft directory: %w", err)
	}
	store, err := openStore(filepath.Join(dir, "raft.db"))
	if err != nil {
		return nil, err
	}
	inst := &instance{store: store, fsm: fsm.New(), applied: newAppliedNotifier(), onChange: c.signalChange}
	fail := func(err error) (*instance, error) {
		inst.close()
		return nil, err
	}
	logs, err := raft.NewLogCache(512, store)
	if err != nil {
		return fail(fmt.Errorf("raft log cache: %w", err))
	}
	hl := newRaftLogger(c.log)
	snaps, err := raft.NewFileSnapshotStoreWithLogger(dir, 2, hl)
	if err != nil {
		return fail(fmt.Errorf("raft snapshot store: %w", err))
	}
	inst.layer = newRaftStreamLayer(c.mux.ln.Addr(), c.selfAddress(), c.dialer)
	inst.transport = raft.NewNetworkTransportWithConfig(&raft.NetworkTransportConfig{
		Stream:  inst.layer,
		MaxPool: 3,
		Timeout: c.cfg.RequestTimeout,
		Logger:  hl,
	})
	c.mux.raft.Store(inst.layer.chanListener)

	rc := raft.DefaultConfig()
	rc.LocalID = raft.ServerID(c.cfg.NodeName)
	rc.HeartbeatTimeout = c.cfg.Raft.HeartbeatTimeout
	rc.ElectionTimeout = c.cfg.Raft.ElectionTimeout
	rc.LeaderLeaseTimeout = c.cfg.Raft.LeaderLeaseTimeout
	rc.CommitTimeout = 20 * time.Millisecond
	if sn := c.cfg.Snapshots; sn.Threshold > 0 {
		rc.SnapshotThreshold = sn.Threshold
	}
	if sn := c.cfg.Snapshots; sn.Interval > 0 {
		rc.SnapshotInterval = sn.Interval
	}
	if sn := c.cfg.Snapshots; sn.TrailingLogs > 0 {
		rc.TrailingLogs = sn.TrailingLogs
	}
	rc.Logger = hl
	rc.ShutdownOnRemove = false // a purged node keeps serving its API and learns it was purged

	hasState, err := raft.HasExistingState(logs, store, snaps)
	if err != nil {
		return fail(fmt.Errorf("inspect raft state: %w", err))
	}
	r, err := raft.NewRaft(rc, &raftFSM{inst: inst, log: c.log}, logs, store, snaps, inst.transport)
	if err != nil {
		return fail(fmt.Errorf("start raft: %w", err))
	}
	inst.raft = r
	if bootstrap && !hasState {
		boot := raft.Configuration{Servers: []raft.Server{{
			Suffrage: raft.Voter,
			ID:       raft.ServerID(c.cfg.NodeName),
			Address:  raft.ServerAddress(c.selfAddress()),
		}}}
		if err := r.BootstrapCluster(boot).Error(); err != nil {
			return fail(fmt.Errorf("bootstrap one-node cluster: %w", err))
		}
		c.log.Info("formed a one-node cluster")
	}
	return inst, nil
}

// openStore opens the Raft log and stable store, telling a file another
// process holds from a file that is not a sound bbolt database.
func openStore(path string) (store *raftboltdb.BoltStore, err error) {
	defer func() {
		// bbolt trusts the pages it reads; a damaged file can make it
		// panic. What it leaves behind (the open file, a goroutine) goes
		// when the process exits, which it does on this error.
		if r := recover(); r != nil {
			store, err = nil, fmt.Errorf("raft store %s is corrupt (%v); restore it from a backup, or move it away and let this node join its cluster again", path, r)
		}
	}()
	store, err = raftboltdb.New(raftboltdb.Options{
		Path:        path,
		BoltOptions: &bbolt.Options{Timeout: 2 * time.Second, NoFreelistSync: true},
	})
	switch {
	case err == nil:
		return store, nil
	case errors.Is(err, bberrors.ErrTimeout):
		return nil, fmt.Errorf("raft store %s is locked: is another sorad using this data_dir? %w", path, err)
	case errors.Is(err, bberrors.ErrInvalid), errors.Is(err, bberrors.ErrChecksum), errors.Is(err, bberrors.ErrVersionMismatch):
		return nil, fmt.Errorf("raft store %s is corrupt; restore it from a backup, or move it away and let this node join its cluster again: %w", path, err)
	default:
		return nil, fmt.Errorf("open raft store %s: %w", path, err)
	}
}

// close stops Raft and releases the stores. It is safe on a partly opened
// instance.
func (inst *instance) close() error {
	var errs []error
	if inst.raft != nil {
		if err := inst.raft.Shutdown().Error(); err != nil {
			errs = append(errs, fmt.Errorf("shutdown raft: %w", err))
		}
	}
	if inst.transport != nil {
		if err := inst.transport.Close(); err != nil {
			errs = append(errs, fmt.Errorf("close raft transport: %w", err))
		}
	} else if inst.layer != nil {
		inst.layer.Close()
	}
	if inst.store != nil {
		if err := inst.store.Close(); err != nil {
			errs = append(errs, fmt.Errorf("close raft store: %w", err))
		}
	}
	inst.applied.close()
	return errors.Join(errs...)
}

// servers returns the current Raft configuration, or nil if it cannot be
// read (Raft shutting down).
func (inst *instance) servers() []raft.Server {
	f := inst.raft.GetConfiguration()
	if f.Error() != nil {
		return nil
	}
	return f.Configuration().Servers
}

// waitApplied blocks until the local state machine has applied index.
func (inst *instance) waitApplied(ctx context.Context, index uint64) error {
	return inst.applied.wait(ctx, func() bool { return inst.fsm.AppliedIndex() >= index })
}

// raftFSM adapts fsm.FSM to raft.FSM.
type raftFSM struct {
	inst *instance
	log  interface {
		Error(msg string, args ...any)
	}
}

func (r *raftFSM) Apply(l *raft.Log) any {
	if l.Type != raft.LogCommand {
		return nil
	}
	res, err := r.inst.fsm.Apply(l.Index, l.Data)
	if err != nil {
		// A committed entry this node cannot apply means its state would
		// diverge from the cluster's. Stopping is the only safe answer.
		r.log.Error("cannot apply committed raft entry; stopping", "index", l.Index, "error", err)
		panic(fmt.Sprintf("sorad: %v", err))
	}
	r.inst.applied.notify()
	r.inst.onChange()
	return res
}

func (r *raftFSM) Snapshot() (raft.FSMSnapshot, error) {
	s, index := r.inst.fsm.Snapshot()
	return &fsmSnapshot{state: s, index: index}, nil
}

func (r *raftFSM) Restore(rc io.ReadCloser) error {
	defer rc.Close()
	s, index, err := fsm.DecodeSnapshot(rc)
	if err != nil {
		return err
	}
	r.inst.fsm.Restore(s, index)
	r.inst.applied.notify()
	r.inst.onChange()
	return nil
}

type fsmSnapshot struct {
	state *fsm.State
	index uint64
}

func (s *fsmSnapshot) Persist(sink raft.SnapshotSink) error {
	if err := fsm.EncodeSnapshot(sink, s.state, s.index); err != nil {
		_ = sink.Cancel()
		return err
	}
	return sink.Close()
}

func (s *fsmSnapshot) Release() {}

// appliedNotifier wakes waiters whenever the state machine changes.
type appliedNotifier struct {
	mu     sync.Mutex
	ch     chan struct{}
	closed bool
}

func newAppliedNotifier() *appliedNotifier {
	return &appliedNotifier{ch: make(chan struct{})}
}

func (n *appliedNotifier) notify() {
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.closed {
		return
	}
	close(n.ch)
	n.ch = make(chan struct{})
}

func (n *appliedNotifier) close() {
	n.mu.Lock()
	defer n.mu.Unlock()
	if !n.closed {
		n.closed = true
		close(n.ch)
	}
}

var errInstanceClosed = errors.New("raft instance closed")

// wait blocks until cond holds, ctx ends or the instance closes.
func (n *appliedNotifier) wait(ctx context.Context, cond func() bool) error {
	for {
		n.mu.Lock()
		ch, closed := n.ch, n.closed
		n.mu.Unlock()
		if cond() {
			return nil
		}
		if closed {
			return errInstanceClosed
		}
		select {
		case <-ch:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}
