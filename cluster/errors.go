package cluster

import (
	"errors"
	"fmt"
)

// Kind says which class of failure an Error is; the API maps it to an HTTP
// status in one place.
type Kind int

const (
	// KindInvalid is a request the caller must change (400).
	KindInvalid Kind = iota + 1
	// KindUnavailable is a request that may succeed later: no quorum, no
	// leader, a peer that cannot be reached (503).
	KindUnavailable
)

// Error is a cluster operation's failure in the terms of Sora's API:
// an UPPER-KEBAB-CASE type and a reason (a string or a small object).
type Error struct {
	Kind   Kind
	Type   string
	Reason any
	Err    error // the underlying cause, if any; never shown to API callers
}

func (e *Error) Error() string {
	msg := fmt.Sprintf("%s: %v", e.Type, e.Reason)
	if e.Err != nil {
		msg += ": " + e.Err.Error()
	}
	return msg
}

func (e *Error) Unwrap() error { return e.Err }

// Error types this package returns. The names are part of the API.
const (
	TypeNodeIsAlive            = "NODE-IS-ALIVE"
	TypeNodeNotFound           = "NODE-NOT-FOUND"
	TypeCannotPurgeSelf        = "CANNOT-PURGE-SELF"
	TypeCannotJoinSelf         = "CANNOT-JOIN-SELF"
	TypeInvalidNodeName        = "INVALID-NODE-NAME"
	TypeAlreadyInCluster       = "ALREADY-IN-CLUSTER"
	TypeContactNodeUnreachable = "CONTACT-NODE-UNREACHABLE"
	TypeContactNodeMismatch    = "CONTACT-NODE-NAME-MISMATCH"
	TypeContactNodeBusy        = "CONTACT-NODE-BUSY"
	TypeJoinFailed             = "JOIN-FAILED"
	TypeNodeNotMember          = "NODE-NOT-MEMBER"
	TypeNodeNotReady           = "NODE-NOT-READY"
	TypeNoQuorum               = "CLUSTER-UNAVAILABLE"
	TypeNotLeader              = "NOT-LEADER"
	TypeNoNodeAvailable        = "NO-NODE-AVAILABLE"
	TypeNodeUnreachable        = "NODE-IN-CHARGE-UNREACHABLE"
	TypeHolderNotDeadYet       = "NODE-IN-CHARGE-NOT-DEAD-YET"
	TypeInvalidMode            = "INVALID-MODE"
	TypeInvalidCommand         = "INVALID-COMMAND"
	TypeInternal               = "INTERNAL-ERROR"
)

func invalid(typ string, reason any) *Error {
	return &Error{Kind: KindInvalid, Type: typ, Reason: reason}
}

func unavailable(typ string, reason any, cause error) *Error {
	return &Error{Kind: KindUnavailable, Type: typ, Reason: reason, Err: cause}
}

// targetNode is the error_reason shape of the seeds' NODE-IS-ALIVE example.
type targetNode struct {
	TargetNode string `json:"target_node"`
}

// retryable reports whether an operation that failed with err may succeed if
// tried again on the same or another node.
func retryable(err error) bool {
	var e *Error
	if errors.As(err, &e) {
		return e.Kind == KindUnavailable
	}
	return true // transport errors and the like
}
