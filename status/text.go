package status

import (
	"encoding/json"
	"fmt"
	"io"
	"strings"
	"text/tabwriter"
)

// WriteJSON writes the report as indented JSON.
func (r Report) WriteJSON(w io.Writer) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(r)
}

// WriteText writes the report as tables for people: one block per VIP,
// then BGP sessions and L2 ownership.
func (r Report) WriteText(w io.Writer) error {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	p := func(format string, args ...any) { _, _ = fmt.Fprintf(tw, format+"\n", args...) }

	switch {
	case r.Sources.Datapath != "" && r.Sources.API:
		p("node %s: datapath %s joined with the API", orDash(r.Node), r.Sources.Datapath)
	case r.Sources.Datapath != "":
		p("datapath %s only (no API: pools, announcements and Pod names unknown)", r.Sources.Datapath)
	case r.Sources.API:
		p("node %s: API only (no datapath counters: run zerohop status on the node for those)", orDash(r.Node))
	}
	if d := r.Datapath; d != nil {
		p("XDP attached to: %s  conntrack entries in use: %d", orDash(strings.Join(d.Attached, ",")), d.ConntrackEntries)
		p("to local Pods: %d into the Pod by tc, %d by XDP redirect, %d through the node's stack  (Pod links: %d)",
			d.Delivery["peerTC"], d.Delivery["redirect"], d.Delivery["stack"], d.PodLinks)
	}
	p("")

	if len(r.VIPs) == 0 {
		p("no VIPs")
	}
	for _, v := range r.VIPs {
		p("VIP %s  service %s  pool %s  mode %s/%s", v.Address, orDash(v.Service), orDash(v.Pool), orDash(v.Mode), orDash(v.TrafficPolicy))
		for _, a := range v.AnnouncedBy {
			var how []string
			if len(a.Peers) > 0 {
				how = append(how, "BGP to "+strings.Join(a.Peers, ","))
			}
			if len(a.L2Interfaces) > 0 {
				how = append(how, "L2 on "+strings.Join(a.L2Interfaces, ","))
			}
			p("  announced by %s: %s", a.Node, strings.Join(how, "; "))
		}
		if len(v.AnnouncedBy) == 0 && v.Mode != "" {
			p("  announced by no node")
		}
		for _, c := range v.Conditions {
			p("  %s %s (%s): %s", c.Type, c.Status, orDash(c.Reason), c.Message)
		}
		for _, pt := range v.Ports {
			where := "not in this node's datapath"
			if pt.InDatapath {
				where = fmt.Sprintf("packets %d  bytes %d  flows %d  drops: no-backend %d, source-range %d, rejected %d",
					pt.Packets, pt.Bytes, pt.Flows, pt.Drops.NoBackend, pt.Drops.SourceRange, pt.Drops.Rejected)
			} else if r.Sources.Datapath == "" {
				where = "datapath not read"
			}
			p("  %d/%s  %s", pt.Port, pt.Protocol, where)
			if len(pt.SourceRanges) > 0 {
				p("    source ranges: %s", strings.Join(pt.SourceRanges, ","))
			}
			if pt.Affinity {
				p("    session affinity: ClientIP")
			}
			if len(pt.Backends) > 0 {
				p("    BACKEND\tPOD\tNODE\tSTATE\tPACKETS\tBYTES\tFLOWS")
			}
			for _, b := range pt.Backends {
				st := b.State
				if b.Remote {
					st += ",remote"
				}
				if !b.InDatapath {
					p("    %s\t%s\t%s\t%s\t-\t-\t-", b.Address, orDash(b.Pod), orDash(b.Node), orDash(st))
					continue
				}
				p("    %s\t%s\t%s\t%s\t%d\t%d\t%d", b.Address, orDash(b.Pod), orDash(b.Node), orDash(st), b.Packets, b.Bytes, b.Flows)
			}
			// Each table aligns on its own.
			if err := tw.Flush(); err != nil {
				return err
			}
		}
		p("")
	}

	if err := tw.Flush(); err != nil {
		return err
	}
	if r.Sources.API {
		p("BGP SESSIONS")
		if len(r.Sessions) == 0 {
			p("  none")
		} else {
			p("  NODE\tPEER\tADDRESS\tSTATE\tUPTIME\tPREFIXES SENT\tBFD")
		}
		for _, s := range r.Sessions {
			up := "-"
			if s.State == "established" {
				up = FormatUptime(s.UptimeSeconds)
			}
			p("  %s\t%s\t%s\t%s\t%s\t%d\t%s", s.Node, s.Peer, orDash(s.Address), orDash(s.State), up, s.PrefixesSent, orDash(s.BFD))
		}
		p("")
		if err := tw.Flush(); err != nil {
			return err
		}
		p("L2 OWNERSHIP")
		if len(r.L2) == 0 {
			p("  none")
		} else {
			p("  ADDRESS\tSERVICE\tNODE\tINTERFACES")
		}
		for _, o := range r.L2 {
			p("  %s\t%s\t%s\t%s", o.Address, orDash(o.Service), o.Node, orDash(strings.Join(o.Interfaces, ",")))
		}
	}
	if len(r.Notes) > 0 {
		p("")
		p("NOTES")
		for _, n := range r.Notes {
			p("  %s", n)
		}
	}
	return tw.Flush()
}

func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}
