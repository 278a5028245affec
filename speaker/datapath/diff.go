package datapath

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"slices"

	"github.com/zerohop/zerohop/bpf"
)

// Upsert is one service to create or replace.
type Upsert struct {
	Key   bpf.ServiceKey
	Entry Entry
}

// Observed describes a datapath whose keys are known (bpf.Datapath's
// Services after a restart) but whose contents are not: Diff against it
// rewrites every wanted key once and deletes every other.
func Observed(keys []bpf.ServiceKey) map[bpf.ServiceKey]Entry {
	out := make(map[bpf.ServiceKey]Entry, len(keys))
	for _, k := range keys {
		out[k] = Entry{}
	}
	return out
}

// Diff returns what moves the datapath from current to desired: upserts
// for keys that are new or whose flags or backends changed, deletes for
// keys no longer wanted. Unchanged keys are left out, so a change to one
// Service rewrites no other Service's maps. Both lists are sorted by key.
func Diff(current, desired map[bpf.ServiceKey]Entry) (upserts []Upsert, deletes []bpf.ServiceKey) {
	for k, want := range desired {
		if have, ok := current[k]; ok && have.known() && sameContent(have, want) {
			continue
		}
		upserts = append(upserts, Upsert{Key: k, Entry: want})
	}
	for k := range current {
		if _, ok := desired[k]; !ok {
			deletes = append(deletes, k)
		}
	}
	slices.SortFunc(upserts, func(a, b Upsert) int { return compareKeys(a.Key, b.Key) })
	slices.SortFunc(deletes, compareKeys)
	return upserts, deletes
}

// Equal says whether both entries are known and hold the same flags and
// backends (the Service name is not compared).
func (e Entry) Equal(o Entry) bool {
	return e.known() && o.known() && sameContent(e, o)
}

func sameContent(a, b Entry) bool {
	return a.Flags == b.Flags && a.AffinityTimeout == b.AffinityTimeout &&
		slices.Equal(a.SourceRanges, b.SourceRanges) && slices.Equal(a.Backends, b.Backends)
}

func compareKeys(a, b bpf.ServiceKey) int {
	return cmp.Or(a.Addr.Compare(b.Addr), cmp.Compare(a.Port, b.Port), cmp.Compare(a.Proto, b.Proto))
}

// Applier is the part of *bpf.Datapath that Apply uses.
type Applier interface {
	Upsert(key bpf.ServiceKey, cfg bpf.ServiceConfig) error
	DeleteService(key bpf.ServiceKey) error
}

var _ Applier = (*bpf.Datapath)(nil)

// Apply performs upserts, then deletes, and records in current (when not
// nil) what the datapath now holds, so that the next Diff retries exactly
// what failed. Upserts come first: a Service that moves from one VIP to
// another never has a moment with neither. A failed upsert leaves its key
// in current with unknown content, so the next Diff rewrites it if it is
// still wanted and deletes it if not; a failed delete stays in current and
// is retried. Apply carries on past failures and returns them joined; it
// stops early only when ctx is done.
//
// The caller must announce a VIP only after Apply succeeded for its keys,
// and withdraw it before Apply deletes them (docs/speaker-datapath.md).
func Apply(ctx context.Context, a Applier, current map[bpf.ServiceKey]Entry, upserts []Upsert, deletes []bpf.ServiceKey) error {
	var errs []error
	for _, u := range upserts {
		if err := ctx.Err(); err != nil {
			return errors.Join(append(errs, err)...)
		}
		cfg := bpf.ServiceConfig{Backends: u.Entry.Backends, Flags: u.Entry.Flags,
			SourceRanges: u.Entry.SourceRanges, AffinityTimeout: u.Entry.AffinityTimeout}
		if err := a.Upsert(u.Key, cfg); err != nil {
			errs = append(errs, fmt.Errorf("service %s: upsert %s: %w", u.Entry.Service, u.Key, err))
			if current != nil {
				current[u.Key] = Entry{Service: u.Entry.Service}
			}
			continue
		}
		if current != nil {
			u.Entry.Backends = slices.Clone(u.Entry.Backends)
			u.Entry.SourceRanges = slices.Clone(u.Entry.SourceRanges)
			current[u.Key] = u.Entry
		}
	}
	for _, k := range deletes {
		if err := ctx.Err(); err != nil {
			return errors.Join(append(errs, err)...)
		}
		if err := a.DeleteService(k); err != nil {
			errs = append(errs, fmt.Errorf("delete %s: %w", k, err))
			continue
		}
		if current != nil {
			delete(current, k)
		}
	}
	return errors.Join(errs...)
}
