package ipam

import (
	"cmp"
	"fmt"
	"math/big"
	"net/netip"
	"slices"
	"strings"
	"time"
)

// PoolSpec is an IPAddressPool reduced to what allocation needs.
type PoolSpec struct {
	Name string
	// Ranges are the addresses the pool declares; they may overlap each
	// other and other pools' ranges.
	Ranges        []Range
	AutoAssign    bool
	AvoidBuggyIPs bool
	// Restricted pools (a serviceAllocation: they choose whom they serve)
	// are tried before pools that serve every Service, as in MetalLB: a
	// pool set aside for a namespace or a kind of Service is what its
	// Services expect to get first.
	Restricted bool
	// Priority orders auto-assignment within the restricted and within
	// the unrestricted pools: a priority > 0 comes first, lowest number
	// first; pools without one (0) follow; ties go by name.
	Priority int
	// Frozen pools hand out nothing new (a pool with an entry in error,
	// until it is fixed); the addresses they hold stay theirs.
	Frozen bool
	// Since is when the pool came into service (its creation time). Where
	// pools declare the same addresses, the older pool keeps them: a pool
	// added later never takes addresses from one already serving.
	Since time.Time
}

// Conflict is a part of a pool's declared addresses that an older pool
// declares too; the younger pool does not allocate from it.
type Conflict struct {
	Range Range
	// With is the older pool.
	With string
}

// Request is one Service's wish, rebuilt from the Service on every
// reconcile. Ensure compares it with what the Service holds.
type Request struct {
	Service string // "namespace/name"
	// Families wanted, primary first (spec.ipFamilies as narrowed by
	// spec.ipFamilyPolicy).
	Families []Family
	// RequireAll is RequireDualStack: every family or none of the new ones.
	RequireAll bool
	// RequestedIPs are explicit addresses, at most one per family.
	RequestedIPs []netip.Addr
	// Pool is the zerohop.io/address-pool annotation.
	Pool string
	// Allowed reports whether the pool's serviceAllocation selectors admit
	// this Service; nil admits every pool.
	Allowed func(pool string) bool
	Sharing Sharing
}

// Reason is a machine-readable cause, used as the Event reason and the
// refusal metric label.
type Reason string

// Reasons for refusals and notes.
const (
	ReasonPoolExhausted   Reason = "PoolExhausted"
	ReasonNoPool          Reason = "NoPool"
	ReasonIPInUse         Reason = "IPInUse"
	ReasonIPNotInPool     Reason = "IPNotInPool"
	ReasonInvalidRequest  Reason = "InvalidRequest"
	ReasonSharingRefused  Reason = "SharingRefused"
	ReasonFamilyMissing   Reason = "DualStackIncomplete"
	ReasonSharingBroken   Reason = "SharingBroken"
	ReasonIPOutsidePool   Reason = "IPOutsidePool"
	ReasonKeptOldIP       Reason = "KeptCurrentIP"
	ReasonRequireDualFail Reason = "RequireDualStackFailed"
)

// Note is an explanation for a refusal or a non-obvious decision.
type Note struct {
	Reason  Reason
	Message string
	// Refusal is true when the Service did not get what it asked for.
	Refusal bool
}

// Assignment is one IP handed to a Service by a call.
type Assignment struct {
	IP   netip.Addr
	Pool string
	// SharedWith lists the other holders when the IP was shared.
	SharedWith []string
}

// Result is what Ensure did.
type Result struct {
	// IPs held after the call, in the order of Request.Families, and the
	// pool each was allocated from ("" for an address outside every pool).
	IPs       []netip.Addr
	Pools     []string
	Allocated []Assignment
	Released  []netip.Addr
	Notes     []Note
	// Outside lists held IPs that lie in no pool any more.
	Outside []netip.Addr
	// Satisfied is true when every wanted family has an IP.
	Satisfied bool
}

type pool struct {
	PoolSpec
	// declared are the pool's ranges, merged; alloc are the declared
	// ranges less those an older pool declares: the only addresses this
	// pool hands out.
	declared  []Range
	alloc     []Range
	conflicts []Conflict
	// per family: addresses usable for allocation, how many of them are
	// held (by any Service, whatever pool it records), and how many held
	// addresses record this pool.
	usable   map[Family]*big.Int
	size     map[Family]*big.Int
	assigned map[Family]int64
	taken    map[Family]int64
	// cursor per alloc range: where the next free-address scan starts, so
	// that allocating n addresses costs O(n) rather than O(n²).
	cursor []netip.Addr
}

// declares reports whether a lies in the pool's declared ranges.
func (p *pool) declares(a netip.Addr) bool {
	for _, r := range p.declared {
		if r.Contains(a) {
			return true
		}
	}
	return false
}

// allocates reports whether the pool may hand out a.
func (p *pool) allocates(a netip.Addr) bool {
	if p.AvoidBuggyIPs && isBuggy(a) {
		return false
	}
	for _, r := range p.alloc {
		if r.Contains(a) {
			return true
		}
	}
	return false
}

func (p *pool) hasFamily(f Family) bool {
	return p.size[f] != nil && p.size[f].Sign() > 0
}

func (p *pool) available(f Family) *big.Int {
	if p.usable[f] == nil {
		return new(big.Int)
	}
	return new(big.Int).Sub(p.usable[f], big.NewInt(p.taken[f]))
}

type holder struct {
	sharing Sharing
}

type ipEntry struct {
	key     string // sharing key of all holders ("" = exclusive)
	holders map[string]*holder
	// pool is the pool the address was allocated from ("" when no pool
	// declares it any more): it decides how the address is announced.
	pool string
}

type svcState struct {
	ips     []netip.Addr
	sharing Sharing
}

// Allocator holds pools and allocations. It is not safe for concurrent
// use; the controller serialises calls.
type Allocator struct {
	pools     map[string]*pool
	order     []*pool // auto-assignment order
	seniority []*pool // oldest first
	ips       map[netip.Addr]*ipEntry
	svcs      map[string]*svcState
	byKey     map[string]map[netip.Addr]struct{}
	unsatisfy map[string]struct{}
}

// New returns an empty allocator.
func New() *Allocator {
	return &Allocator{
		pools:     map[string]*pool{},
		ips:       map[netip.Addr]*ipEntry{},
		svcs:      map[string]*svcState{},
		byKey:     map[string]map[netip.Addr]struct{}{},
		unsatisfy: map[string]struct{}{},
	}
}

// SetPools replaces the pool set. Allocations are never dropped here: an
// IP that no pool contains any more stays with its Service and is reported
// by Ensure as outside (see docs/controller.md, "pool edits"). Where pools
// declare the same addresses, the oldest keeps them (Conflicts).
func (a *Allocator) SetPools(specs []PoolSpec) {
	old := a.pools
	a.pools = make(map[string]*pool, len(specs))
	a.order = a.order[:0]
	a.seniority = a.seniority[:0]
	for _, s := range specs {
		p := &pool{
			PoolSpec: s,
			declared: Merge(s.Ranges),
			usable:   map[Family]*big.Int{},
			size:     map[Family]*big.Int{},
			assigned: map[Family]int64{},
			taken:    map[Family]int64{},
		}
		p.Ranges = slices.Clone(s.Ranges)
		a.pools[s.Name] = p
		a.order = append(a.order, p)
		a.seniority = append(a.seniority, p)
	}
	slices.SortFunc(a.seniority, func(x, y *pool) int {
		return cmp.Or(x.Since.Compare(y.Since), strings.Compare(x.Name, y.Name))
	})
	var older []Range
	for i, p := range a.seniority {
		if !p.Frozen {
			p.alloc = Subtract(p.declared, older)
		}
		for _, q := range a.seniority[:i] {
			for _, r := range p.declared {
				for _, t := range q.declared {
					if in, ok := r.Intersect(t); ok {
						p.conflicts = append(p.conflicts, Conflict{Range: in, With: q.Name})
					}
				}
			}
		}
		older = append(older, p.declared...)
		for _, r := range p.alloc {
			total, buggy := r.size()
			f := r.Family()
			if p.size[f] == nil {
				p.size[f], p.usable[f] = new(big.Int), new(big.Int)
			}
			p.size[f].Add(p.size[f], total)
			p.usable[f].Add(p.usable[f], total)
			if p.AvoidBuggyIPs {
				p.usable[f].Sub(p.usable[f], buggy)
			}
		}
		p.cursor = make([]netip.Addr, len(p.alloc))
		if o := old[p.Name]; o != nil && slices.Equal(o.alloc, p.alloc) {
			copy(p.cursor, o.cursor)
		}
	}
	slices.SortFunc(a.order, func(x, y *pool) int {
		return cmp.Or(comparePools(x.PoolSpec, y.PoolSpec), strings.Compare(x.Name, y.Name))
	})
	for ip, e := range a.ips {
		e.pool = a.rehome(ip, e.pool)
		a.count(ip, e.pool, 1)
	}
}

// comparePools orders pools for automatic allocation, names aside:
// restricted before unrestricted, then by priority (none last).
func comparePools(x, y PoolSpec) int {
	rank := func(p PoolSpec) int {
		if p.Restricted {
			return 0
		}
		return 1
	}
	prio := func(p PoolSpec) int {
		if p.Priority <= 0 {
			return int(^uint(0) >> 1)
		}
		return p.Priority
	}
	return cmp.Or(cmp.Compare(rank(x), rank(y)), cmp.Compare(prio(x), prio(y)))
}

// Order returns the pool names in the order automatic allocation tries
// them (before the Service's own selectors and autoAssign filter them).
func (a *Allocator) Order() []string {
	out := make([]string, len(a.order))
	for i, p := range a.order {
		out[i] = p.Name
	}
	return out
}

// rehome returns the pool an allocated address belongs to: the one it
// recorded while that pool still declares it, else the oldest pool that
// declares it, else "" (outside every pool).
func (a *Allocator) rehome(ip netip.Addr, recorded string) string {
	if p := a.pools[recorded]; p != nil && p.declares(ip) {
		return recorded
	}
	for _, p := range a.seniority {
		if p.declares(ip) {
			return p.Name
		}
	}
	return ""
}

// count adds d to the counters that ip, recorded for pool home, moves:
// the home pool's assigned count, and the taken count of the pool that
// would hand ip out.
func (a *Allocator) count(ip netip.Addr, home string, d int64) {
	f := FamilyOf(ip)
	if p := a.pools[home]; p != nil {
		p.assigned[f] += d
	}
	for _, p := range a.seniority {
		if p.allocates(ip) {
			p.taken[f] += d
		}
	}
}

// PoolStats are the counts shown in IPAddressPool.status.
type PoolStats struct {
	Assigned, Available map[Family]int64
}

// Stats returns the counts for pool name (false if unknown). Sizes beyond
// int64 are clamped.
func (a *Allocator) Stats(name string) (PoolStats, bool) {
	p := a.pools[name]
	if p == nil {
		return PoolStats{}, false
	}
	st := PoolStats{Assigned: map[Family]int64{}, Available: map[Family]int64{}}
	for _, f := range []Family{IPv4, IPv6} {
		st.Assigned[f] = p.assigned[f]
		st.Available[f] = clampInt64(p.available(f))
	}
	return st, true
}

// Conflicts returns, for every pool that declares addresses an older pool
// declares too, those parts and the older pool: the younger pool does not
// hand them out.
func (a *Allocator) Conflicts() map[string][]Conflict {
	out := map[string][]Conflict{}
	for _, p := range a.seniority {
		if len(p.conflicts) > 0 {
			out[p.Name] = slices.Clone(p.conflicts)
		}
	}
	return out
}

// InPool reports whether any pool declares ip.
func (a *Allocator) InPool(ip netip.Addr) bool {
	return a.rehome(ip, "") != ""
}

// PoolOf returns the pool ip belongs to: the pool it was allocated from
// while it is held and that pool still declares it, else the oldest pool
// that declares it, else "".
func (a *Allocator) PoolOf(ip netip.Addr) string {
	if e := a.ips[ip]; e != nil {
		return e.pool
	}
	return a.rehome(ip, "")
}

// IPs returns the addresses held by service.
func (a *Allocator) IPs(service string) []netip.Addr {
	if s := a.svcs[service]; s != nil {
		return slices.Clone(s.ips)
	}
	return nil
}

// Holders returns the Services holding ip, sorted.
func (a *Allocator) Holders(ip netip.Addr) []string {
	e := a.ips[ip]
	if e == nil {
		return nil
	}
	out := make([]string, 0, len(e.holders))
	for k := range e.holders {
		out = append(out, k)
	}
	slices.Sort(out)
	return out
}

// Unsatisfied returns the Services that miss at least one wanted family;
// the controller retries them when addresses are freed or pools change.
func (a *Allocator) Unsatisfied() []string {
	out := make([]string, 0, len(a.unsatisfy))
	for k := range a.unsatisfy {
		out = append(out, k)
	}
	slices.Sort(out)
	return out
}

// Restore records an allocation found in a Service's status when the
// controller starts, without consulting pools: what is assigned stays
// assigned. It refuses an IP already held by a Service it cannot share
// with; the caller restores Services oldest first, so the older one wins.
//
// pools, parallel to ips, are the pools the addresses were recorded as
// allocated from ("" or missing: unknown); a recorded pool that no longer
// declares its address gives way to the oldest pool that does.
func (a *Allocator) Restore(service string, ips []netip.Addr, pools []string, sh Sharing) error {
	sh = normalise(sh)
	var keep []netip.Addr
	var homes []string
	seen := map[Family]bool{}
	for i, ip := range ips {
		f := FamilyOf(ip)
		if seen[f] {
			continue
		}
		if err := a.shareCheck(service, ip, sh); err != nil {
			return fmt.Errorf("restore %s: %w", ip, err)
		}
		seen[f] = true
		keep = append(keep, ip)
		recorded := ""
		if i < len(pools) {
			recorded = pools[i]
		}
		homes = append(homes, a.rehome(ip, recorded))
	}
	a.Release(service)
	st := &svcState{sharing: sh}
	a.svcs[service] = st
	for i, ip := range keep {
		a.hold(service, st, ip, homes[i])
	}
	return nil
}

// shareCheck returns nil when service may hold ip next to its holders.
func (a *Allocator) shareCheck(service string, ip netip.Addr, sh Sharing) error {
	e := a.ips[ip]
	if e == nil {
		return nil
	}
	for _, other := range sortedHolders(e) {
		if other == service {
			continue
		}
		if err := canShare(sh, e.holders[other].sharing); err != nil {
			return fmt.Errorf("IP %s is in use by %s: %w", ip, other, err)
		}
	}
	return nil
}

func sortedHolders(e *ipEntry) []string {
	out := make([]string, 0, len(e.holders))
	for k := range e.holders {
		out = append(out, k)
	}
	slices.Sort(out)
	return out
}

// hold gives ip to service; home is the pool it comes from, used only when
// ip was free (a shared address keeps the pool it was allocated from).
func (a *Allocator) hold(service string, st *svcState, ip netip.Addr, home string) {
	st.ips = append(st.ips, ip)
	e := a.ips[ip]
	if e == nil {
		e = &ipEntry{key: st.sharing.Key, holders: map[string]*holder{}, pool: home}
		a.ips[ip] = e
		a.count(ip, home, 1)
		if e.key != "" {
			if a.byKey[e.key] == nil {
				a.byKey[e.key] = map[netip.Addr]struct{}{}
			}
			a.byKey[e.key][ip] = struct{}{}
		}
	}
	e.holders[service] = &holder{sharing: st.sharing}
}

// drop removes service from ip's holders, freeing ip when it was the last.
func (a *Allocator) drop(service string, st *svcState, ip netip.Addr) {
	st.ips = slices.DeleteFunc(st.ips, func(x netip.Addr) bool { return x == ip })
	e := a.ips[ip]
	if e == nil {
		return
	}
	delete(e.holders, service)
	if len(e.holders) == 0 {
		delete(a.ips, ip)
		a.count(ip, e.pool, -1)
		if e.key != "" {
			delete(a.byKey[e.key], ip)
			if len(a.byKey[e.key]) == 0 {
				delete(a.byKey, e.key)
			}
		}
	}
}

// Release frees everything service holds and returns what it held.
func (a *Allocator) Release(service string) []netip.Addr {
	delete(a.unsatisfy, service)
	st := a.svcs[service]
	if st == nil {
		return nil
	}
	held := slices.Clone(st.ips)
	for _, ip := range held {
		a.drop(service, st, ip)
	}
	delete(a.svcs, service)
	return held
}

func normalise(sh Sharing) Sharing {
	sh.Ports = slices.Clone(sh.Ports)
	slices.SortFunc(sh.Ports, func(x, y Port) int {
		return cmp.Or(cmp.Compare(x.Port, y.Port), strings.Compare(x.Protocol, y.Protocol))
	})
	sh.Ports = slices.Compact(sh.Ports)
	return sh
}

// Ensure makes service's allocation match req, changing as little as
// possible: an address the Service holds is kept unless the request itself
// moved away from it (other requested IP, other pool, family dropped) or a
// change of this Service broke sharing with the other holders.
func (a *Allocator) Ensure(req Request) Result {
	req.Sharing = normalise(req.Sharing)
	var res Result
	st := a.svcs[req.Service]
	if st == nil {
		st = &svcState{sharing: req.Sharing}
		a.svcs[req.Service] = st
	}
	if !st.sharing.equal(req.Sharing) {
		// Update this Service's sharing facts on every IP it holds, then
		// give up the IPs where it no longer fits next to the others.
		st.sharing = req.Sharing
		for _, ip := range slices.Clone(st.ips) {
			e := a.ips[ip]
			err := a.shareCheck(req.Service, ip, req.Sharing)
			if err == nil && len(e.holders) > 1 && e.key != req.Sharing.Key {
				err = fmt.Errorf("sharing key changed")
			}
			if err != nil {
				a.drop(req.Service, st, ip)
				res.Released = append(res.Released, ip)
				res.Notes = append(res.Notes, Note{Reason: ReasonSharingBroken,
					Message: fmt.Sprintf("released %s: %v", ip, err)})
				continue
			}
			e.holders[req.Service].sharing = req.Sharing
			if len(e.holders) == 1 && e.key != req.Sharing.Key {
				a.rekey(ip, e, req.Sharing.Key)
			}
		}
	}

	requested := map[Family]netip.Addr{}
	for _, ip := range req.RequestedIPs {
		f := FamilyOf(ip)
		if _, dup := requested[f]; dup {
			res.Notes = append(res.Notes, Note{Reason: ReasonInvalidRequest, Refusal: true,
				Message: fmt.Sprintf("more than one requested %s address", f)})
			continue
		}
		if !slices.Contains(req.Families, f) {
			res.Notes = append(res.Notes, Note{Reason: ReasonInvalidRequest, Refusal: true,
				Message: fmt.Sprintf("requested %s but the Service's ipFamilies are %v", ip, req.Families)})
			continue
		}
		requested[f] = ip
	}

	// Families no longer wanted go first, and duplicates of one family.
	seen := map[Family]bool{}
	for _, ip := range slices.Clone(st.ips) {
		f := FamilyOf(ip)
		if slices.Contains(req.Families, f) && !seen[f] {
			seen[f] = true
			continue
		}
		a.drop(req.Service, st, ip)
		res.Released = append(res.Released, ip)
	}

	var fresh []netip.Addr
	for _, f := range req.Families {
		old, had := heldOf(st, f)
		if had && a.keepable(old, f, req, requested) {
			if a.ips[old].pool == "" {
				res.Outside = append(res.Outside, old)
			}
			continue
		}
		ip, asg, notes := a.pick(f, req, requested)
		if !ip.IsValid() && preferred(req, f) {
			// PreferDualStack served with the families the pools have is
			// served as asked: no pool lacking the second family is news.
			notes = slices.DeleteFunc(notes, func(n Note) bool { return n.Reason == ReasonNoPool })
		}
		res.Notes = append(res.Notes, notes...)
		if !ip.IsValid() {
			if had {
				res.Notes = append(res.Notes, Note{Reason: ReasonKeptOldIP,
					Message: fmt.Sprintf("keeping %s until the requested change can be satisfied", old)})
				if a.ips[old].pool == "" {
					res.Outside = append(res.Outside, old)
				}
			}
			continue
		}
		if had {
			a.drop(req.Service, st, old)
			res.Released = append(res.Released, old)
		}
		asg.SharedWith = a.Holders(ip)
		a.hold(req.Service, st, ip, asg.Pool)
		fresh = append(fresh, ip)
		res.Allocated = append(res.Allocated, asg)
	}

	missing := []Family{}
	for _, f := range req.Families {
		if _, ok := heldOf(st, f); !ok {
			missing = append(missing, f)
		}
	}
	if req.RequireAll && len(missing) > 0 && len(fresh) > 0 {
		for _, ip := range fresh {
			a.drop(req.Service, st, ip)
			a.rewind(ip)
		}
		res.Allocated = nil
		res.Notes = append(res.Notes, Note{Reason: ReasonRequireDualFail, Refusal: true,
			Message: fmt.Sprintf("RequireDualStack: no %v address, so %v was not assigned either", missing, fresh)})
		missing = missing[:0]
		for _, f := range req.Families {
			if _, ok := heldOf(st, f); !ok {
				missing = append(missing, f)
			}
		}
	}
	res.Satisfied = len(missing) == 0
	if res.Satisfied {
		delete(a.unsatisfy, req.Service)
	} else {
		a.unsatisfy[req.Service] = struct{}{}
	}
	for _, f := range req.Families {
		if ip, ok := heldOf(st, f); ok {
			res.IPs = append(res.IPs, ip)
			res.Pools = append(res.Pools, a.ips[ip].pool)
		}
	}
	if len(st.ips) == 0 && res.Satisfied {
		delete(a.svcs, req.Service)
	}
	return res
}

// preferred reports whether f is a family req would like but does not
// need: the second family of PreferDualStack.
func preferred(req Request, f Family) bool {
	return !req.RequireAll && len(req.Families) > 1 && f != req.Families[0] && len(req.RequestedIPs) == 0
}

// rewind puts a range's cursor back on ip when ip was the last address
// handed out from it, so an all-or-nothing request that failed leaves
// allocation order as it found it.
func (a *Allocator) rewind(ip netip.Addr) {
	for _, p := range a.pools {
		for i, r := range p.alloc {
			if !r.Contains(ip) {
				continue
			}
			next := r.First
			if ip != r.Last {
				next = ip.Next()
			}
			if p.cursor[i] == next {
				p.cursor[i] = ip
			}
		}
	}
}

func (a *Allocator) rekey(ip netip.Addr, e *ipEntry, key string) {
	if e.key != "" {
		delete(a.byKey[e.key], ip)
		if len(a.byKey[e.key]) == 0 {
			delete(a.byKey, e.key)
		}
	}
	e.key = key
	if key != "" {
		if a.byKey[key] == nil {
			a.byKey[key] = map[netip.Addr]struct{}{}
		}
		a.byKey[key][ip] = struct{}{}
	}
}

func heldOf(st *svcState, f Family) (netip.Addr, bool) {
	for _, ip := range st.ips {
		if FamilyOf(ip) == f {
			return ip, true
		}
	}
	return netip.Addr{}, false
}

// keepable reports whether the held address old still answers the request.
// Pool selectors, priority and autoAssign only steer new allocations; an
// address outside every pool is kept (pool edits never yank an IP).
func (a *Allocator) keepable(old netip.Addr, f Family, req Request, requested map[Family]netip.Addr) bool {
	if want, ok := requested[f]; ok {
		return want == old
	}
	if req.Pool != "" && a.InPool(old) {
		p := a.pools[req.Pool]
		return p != nil && p.declares(old)
	}
	return true
}

func (a *Allocator) allowed(req Request, name string) bool {
	return req.Allowed == nil || req.Allowed(name)
}

// pick finds an address of family f for req without changing state.
func (a *Allocator) pick(f Family, req Request, requested map[Family]netip.Addr) (netip.Addr, Assignment, []Note) {
	if want, ok := requested[f]; ok {
		return a.pickRequested(want, req)
	}
	var cands []*pool
	if req.Pool != "" {
		p := a.pools[req.Pool]
		switch {
		case p == nil:
			return netip.Addr{}, Assignment{}, []Note{{Reason: ReasonNoPool, Refusal: true,
				Message: fmt.Sprintf("pool %q named by zerohop.io/address-pool does not exist", req.Pool)}}
		case !a.allowed(req, p.Name):
			return netip.Addr{}, Assignment{}, []Note{{Reason: ReasonNoPool, Refusal: true,
				Message: fmt.Sprintf("pool %s does not admit this Service (serviceAllocation)", p.Name)}}
		case !p.hasFamily(f):
			return netip.Addr{}, Assignment{}, []Note{{Reason: ReasonNoPool, Refusal: true,
				Message: fmt.Sprintf("pool %s has no %s addresses", p.Name, f)}}
		}
		cands = []*pool{p}
	} else {
		for _, p := range a.order {
			if p.AutoAssign && p.hasFamily(f) && a.allowed(req, p.Name) {
				cands = append(cands, p)
			}
		}
		if len(cands) == 0 {
			return netip.Addr{}, Assignment{}, []Note{{Reason: ReasonNoPool, Refusal: true,
				Message: fmt.Sprintf("no auto-assign pool with %s addresses admits this Service", f)}}
		}
	}

	var notes []Note
	if key := req.Sharing.Key; key != "" {
		// Join an address already carrying this key, in pool order, then by
		// address so the choice is deterministic.
		var shared []netip.Addr
		for ip := range a.byKey[key] {
			if FamilyOf(ip) == f {
				shared = append(shared, ip)
			}
		}
		slices.SortFunc(shared, netip.Addr.Compare)
		for _, p := range cands {
			for _, ip := range shared {
				if a.ips[ip].pool != p.Name {
					continue
				}
				if err := a.shareCheck(req.Service, ip, req.Sharing); err != nil {
					notes = append(notes, Note{Reason: ReasonSharingRefused, Message: err.Error()})
					continue
				}
				return ip, Assignment{IP: ip, Pool: p.Name}, notes
			}
		}
	}
	for _, p := range cands {
		if ip, ok := a.free(p, f); ok {
			return ip, Assignment{IP: ip, Pool: p.Name}, notes
		}
	}
	names := make([]string, len(cands))
	for i, p := range cands {
		names[i] = p.Name
	}
	return netip.Addr{}, Assignment{}, append(notes, Note{Reason: ReasonPoolExhausted, Refusal: true,
		Message: fmt.Sprintf("pool %s exhausted: no free %s address", strings.Join(names, ", "), f)})
}

func (a *Allocator) pickRequested(want netip.Addr, req Request) (netip.Addr, Assignment, []Note) {
	refuse := func(r Reason, format string, args ...any) (netip.Addr, Assignment, []Note) {
		return netip.Addr{}, Assignment{}, []Note{{Reason: r, Refusal: true, Message: fmt.Sprintf(format, args...)}}
	}
	var in []string
	var home *pool
	if e := a.ips[want]; e != nil {
		// Joining a shared address: it stays with the pool it came from.
		if p := a.pools[e.pool]; p != nil && (req.Pool == "" || req.Pool == p.Name) && a.allowed(req, p.Name) {
			if err := a.shareCheck(req.Service, want, req.Sharing); err != nil {
				return refuse(ReasonIPInUse, "%v", err)
			}
			return want, Assignment{IP: want, Pool: p.Name}, nil
		}
	}
	for _, p := range a.order {
		if !p.allocates(want) {
			continue
		}
		in = append(in, p.Name)
		if home == nil && (req.Pool == "" || req.Pool == p.Name) && a.allowed(req, p.Name) {
			home = p
		}
	}
	switch {
	case home == nil && len(in) == 0:
		return refuse(ReasonIPNotInPool, "requested IP %s is outside every pool", want)
	case home == nil && req.Pool != "" && !slices.Contains(in, req.Pool):
		return refuse(ReasonIPNotInPool, "requested IP %s is not in pool %s (it is in %s)", want, req.Pool, strings.Join(in, ", "))
	case home == nil:
		return refuse(ReasonIPNotInPool, "requested IP %s is in pool %s, which does not admit this Service", want, strings.Join(in, ", "))
	}
	if err := a.shareCheck(req.Service, want, req.Sharing); err != nil {
		return refuse(ReasonIPInUse, "%v", err)
	}
	return want, Assignment{IP: want, Pool: home.Name}, nil
}

// free finds an unheld usable address of family f in p, scanning each
// range from its cursor and wrapping once.
func (a *Allocator) free(p *pool, f Family) (netip.Addr, bool) {
	if p.available(f).Sign() <= 0 {
		return netip.Addr{}, false
	}
	for i, r := range p.alloc {
		if r.Family() != f {
			continue
		}
		start := p.cursor[i]
		if !start.IsValid() || !r.Contains(start) {
			start = r.First
		}
		ip := start
		for {
			if _, held := a.ips[ip]; !held && (!p.AvoidBuggyIPs || !isBuggy(ip)) {
				if ip == r.Last {
					p.cursor[i] = r.First
				} else {
					p.cursor[i] = ip.Next()
				}
				return ip, true
			}
			if ip == r.Last {
				ip = r.First
			} else {
				ip = ip.Next()
			}
			if ip == start {
				break
			}
		}
	}
	return netip.Addr{}, false
}
