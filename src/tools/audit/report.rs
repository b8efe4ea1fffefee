//! `audit report`: the self-contained HTML/SVG report.

use std::borrow::Cow;
use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::path::Path;

use anyhow::Context as _;
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;

use crate::protocol::ids::Country;

use super::*;

// ---- report: rendering ----------------------------------------------------------

/// Everything a report is rendered from; rendering reads no clock and does
/// no I/O.
pub struct ReportInput<'a> {
    pub federation: &'a str,
    pub auditor: &'a str,
    pub broker: &'a str,
    pub generated_at_ms: i64,
    pub verified: &'a VerifyReport,
    pub summary: &'a LogSummary,
    /// Agency id → display name, from the directory.
    pub agency_names: &'a BTreeMap<String, String>,
}

const CSS: &str = "\
body{font-family:system-ui,-apple-system,'Segoe UI',sans-serif;margin:2rem auto;max-width:72rem;\
padding:0 1rem;color:#0f172a;line-height:1.4}\
h1{font-size:1.6rem;margin-bottom:.2rem}h2{margin-top:2rem;border-bottom:1px solid #cbd5e1}\
h3{margin:1.4rem 0 .4rem}.meta{color:#475569}\
table{border-collapse:collapse;margin:.4rem 0 1rem}\
.scroll{overflow-x:auto;max-width:100%}\
th,td{border:1px solid #cbd5e1;padding:.2rem .5rem;text-align:left;vertical-align:top;white-space:nowrap}\
td.text{white-space:normal;min-width:16rem;max-width:40rem;overflow-wrap:break-word}\
th{background:#f1f5f9}td.n{text-align:right;font-variant-numeric:tabular-nums}\
code,pre{font-family:ui-monospace,SFMono-Regular,Menlo,monospace;font-size:.85rem}\
pre{background:#f8fafc;border:1px solid #e2e8f0;padding:.6rem;overflow-x:auto}\
.ok{color:#166534;font-weight:600}.grid{display:flex;flex-wrap:wrap;gap:1.5rem}\
.agency{border:1px solid #e2e8f0;border-radius:6px;padding:.2rem 1rem;margin:1rem 0}\
.charts{display:flex;flex-wrap:wrap;gap:2rem}figure{margin:0}figcaption{color:#475569;font-size:.9rem}";

fn esc(s: &str) -> Cow<'_, str> {
    html_escape(s)
}

/// A heat-map matrix of flows: rows are sending countries, columns receiving
/// countries, each cell's colour scaled to the largest count.
pub fn flow_matrix_svg(title: &str, flows: &BTreeMap<(String, String), u64>) -> String {
    let countries: Vec<&str> = flows
        .keys()
        .flat_map(|(a, b)| [a.as_str(), b.as_str()])
        .collect::<BTreeSet<_>>()
        .into_iter()
        .collect();
    const CELL: usize = 44;
    const LEFT: usize = 64;
    const TOP: usize = 56;
    let n = countries.len();
    let width = LEFT + CELL * n.max(1) + 16;
    let height = TOP + CELL * n.max(1) + 16;
    let max = flows.values().copied().max().unwrap_or(0).max(1);
    let mut s = String::new();
    let _ = write!(
        s,
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{width}\" height=\"{height}\" \
         viewBox=\"0 0 {width} {height}\" role=\"img\" aria-label=\"{}\" \
         font-family=\"system-ui,sans-serif\" font-size=\"13\">",
        esc(title)
    );
    let _ = write!(s, "<title>{}</title>", esc(title));
    let _ = write!(
        s,
        "<text x=\"{}\" y=\"16\" text-anchor=\"middle\" fill=\"#475569\">to →</text>\
         <text x=\"14\" y=\"{}\" text-anchor=\"middle\" fill=\"#475569\" \
         transform=\"rotate(-90 14 {})\">from →</text>",
        LEFT + CELL * n.max(1) / 2,
        TOP + CELL * n.max(1) / 2,
        TOP + CELL * n.max(1) / 2
    );
    if n == 0 {
        let _ = write!(
            s,
            "<text x=\"{LEFT}\" y=\"{}\" fill=\"#475569\">none</text></svg>",
            TOP + 20
        );
        return s;
    }
    for (j, to) in countries.iter().enumerate() {
        let _ = write!(
            s,
            "<text x=\"{}\" y=\"{}\" text-anchor=\"middle\" font-weight=\"600\">{}</text>",
            LEFT + j * CELL + CELL / 2,
            TOP - 10,
            esc(to)
        );
    }
    for (i, from) in countries.iter().enumerate() {
        let y = TOP + i * CELL;
        let _ = write!(
            s,
            "<text x=\"{}\" y=\"{}\" text-anchor=\"end\" font-weight=\"600\">{}</text>",
            LEFT - 8,
            y + CELL / 2 + 5,
            esc(from)
        );
        for (j, to) in countries.iter().enumerate() {
            let x = LEFT + j * CELL;
            let count = flows
                .get(&((*from).to_string(), (*to).to_string()))
                .copied()
                .unwrap_or(0);
            let t = count as f64 / max as f64;
            let (fill, ink) = if count == 0 {
                ("#f8fafc".to_string(), "#94a3b8")
            } else {
                (heat(t), if t > 0.55 { "#ffffff" } else { "#0f172a" })
            };
            let _ = write!(
                s,
                "<g><title>{} → {}: {count}</title><rect x=\"{x}\" y=\"{y}\" width=\"{CELL}\" \
                 height=\"{CELL}\" fill=\"{fill}\" stroke=\"#ffffff\" stroke-width=\"2\"/>\
                 <text x=\"{}\" y=\"{}\" text-anchor=\"middle\" fill=\"{ink}\">{}</text></g>",
                esc(from),
                esc(to),
                x + CELL / 2,
                y + CELL / 2 + 5,
                if count == 0 {
                    "·".to_string()
                } else {
                    count.to_string()
                }
            );
        }
    }
    s.push_str("</svg>");
    s
}

/// Light blue to dark blue; `t` in `0..=1`.
fn heat(t: f64) -> String {
    let t = t.clamp(0.0, 1.0);
    let lerp = |a: f64, b: f64| (a + (b - a) * (0.15 + 0.85 * t)).round() as u8;
    format!(
        "#{:02x}{:02x}{:02x}",
        lerp(219.0, 30.0),
        lerp(234.0, 64.0),
        lerp(254.0, 175.0)
    )
}

fn counts_table<const N: usize>(
    out: &mut String,
    caption: &str,
    head: [&str; N],
    rows: impl IntoIterator<Item = (String, [u64; N])>,
) {
    let rows: Vec<_> = rows.into_iter().collect();
    if rows.is_empty() {
        return;
    }
    let _ = write!(
        out,
        "<table><caption>{}</caption><tr><th></th>",
        esc(caption)
    );
    for h in head {
        let _ = write!(out, "<th>{}</th>", esc(h));
    }
    out.push_str("</tr>");
    for (k, cells) in rows {
        let _ = write!(out, "<tr><td>{}</td>", esc(&k));
        for n in cells {
            let _ = write!(out, "<td class=\"n\">{n}</td>");
        }
        out.push_str("</tr>");
    }
    out.push_str("</table>");
}

/// "purpose / legal basis", with the transfer ground where one was given.
fn grounds(r: &Row) -> String {
    match (r.purpose.is_empty(), r.transfer_ground.is_empty()) {
        (true, _) => String::new(),
        (false, true) => format!("{} / {}", r.purpose, r.legal_basis),
        (false, false) => format!("{} / {} + {}", r.purpose, r.legal_basis, r.transfer_ground),
    }
}

/// Rows of entries: short cells never wrap, the reason wraps at words, and
/// a table wider than the page scrolls.
fn rows_table(out: &mut String, caption: &str, rows: &[Row]) {
    if rows.is_empty() {
        return;
    }
    let _ = write!(
        out,
        "<h4>{} ({})</h4><div class=\"scroll\"><table><tr><th>index</th><th>time</th>\
         <th>envelope</th><th>from → to</th><th>kind</th><th>purpose / legal basis + transfer ground</th>\
         <th>decision</th><th>reason</th></tr>",
        esc(caption),
        rows.len()
    );
    for r in rows {
        let code = if r.code.is_empty() {
            String::new()
        } else {
            format!(" ({})", r.code)
        };
        let _ = write!(
            out,
            "<tr><td class=\"n\">{}</td><td>{}</td><td><code>{}</code></td><td>{} → {}</td>\
             <td>{}</td><td>{}</td><td>{}{}</td><td class=\"text\">{}</td></tr>",
            r.index,
            esc(&crate::protocol::time::format_ms(r.at_ms)),
            esc(&r.envelope_id),
            esc(&r.sender),
            esc(&r.recipients.join(", ")),
            esc(&r.kind),
            esc(&grounds(r)),
            esc(r.decision),
            esc(&code),
            esc(&r.reason)
        );
    }
    out.push_str("</table></div>");
}

/// The report as one self-contained HTML document: inline CSS and SVG, no
/// script, no external resource (a Content-Security-Policy forbids them),
/// every text from the log escaped.
pub fn render_report(input: &ReportInput<'_>) -> String {
    let v = input.verified;
    let cp = &v.checkpoint.checkpoint;
    let sum = input.summary;
    let mut h = String::with_capacity(64 * 1024);
    let _ = write!(
        h,
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\
         <meta http-equiv=\"Content-Security-Policy\" content=\"default-src 'none'; \
         style-src 'unsafe-inline'; img-src data:\">\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\
         <title>Audit report: {fed}</title><style>{CSS}</style></head><body>\
         <h1>Audit report: {fed}</h1><p class=\"meta\">Generated {at} by auditor {aud} from the \
         broker at {broker}.</p>",
        fed = esc(input.federation),
        at = esc(&crate::protocol::time::format_ms(input.generated_at_ms)),
        aud = esc(input.auditor),
        broker = esc(input.broker)
    );

    // The checkpoint.
    h.push_str("<h2 id=\"checkpoint\">Checkpoint</h2><table>");
    let period = match (sum.first_at_ms, sum.last_at_ms) {
        (Some(a), Some(b)) => format!(
            "{} to {}",
            crate::protocol::time::format_ms(a),
            crate::protocol::time::format_ms(b)
        ),
        _ => "no entries".to_string(),
    };
    for (k, val) in [
        ("origin", cp.origin().to_string()),
        ("tree size", cp.size().to_string()),
        ("root (base64)", STANDARD.encode(cp.root_hash())),
        ("root (hex)", hex::encode(cp.root_hash())),
        ("log key", v.checkpoint.log_key.clone()),
        ("directory version", v.directory_version.to_string()),
        ("entries from", period),
    ] {
        let _ = write!(
            h,
            "<tr><th>{}</th><td><code>{}</code></td></tr>",
            esc(k),
            esc(&val)
        );
    }
    h.push_str("</table>");
    let _ = write!(
        h,
        "<p class=\"ok\">Verified: all {} entries fetched, every leaf hash recomputed, the Merkle \
         root equals the signed checkpoint's.",
        cp.size()
    );
    if let Some(m) = v.previous_size {
        let _ = write!(
            h,
            " Consistent with the checkpoint this auditor saved at size {m}."
        );
    }
    let _ = write!(
        h,
        "</p><details><summary>The verification, as the command printed it</summary><pre>{}</pre></details>",
        esc(&v.to_string())
    );
    h.push_str("<h3>Witness cosignatures</h3>");
    if v.checkpoint.cosignatures.is_empty() {
        h.push_str("<p>None.</p>");
    } else {
        h.push_str("<table><tr><th>node</th><th>key name</th><th>cosigned at</th></tr>");
        for c in &v.checkpoint.cosignatures {
            let _ = write!(
                h,
                "<tr><td>{}{}</td><td><code>{}</code></td><td>{}</td></tr>",
                esc(c.country.as_str()),
                if c.revoked { " (revoked)" } else { "" },
                esc(&c.name),
                esc(&format_seconds(c.timestamp))
            );
        }
        h.push_str("</table>");
    }
    if !v.checkpoint.missing.is_empty() {
        let m: Vec<String> = v
            .checkpoint
            .missing
            .iter()
            .map(Country::to_string)
            .collect();
        let _ = write!(h, "<p>Not cosigned by: {}.</p>", esc(&m.join(", ")));
    }
    if !v.checkpoint.unknown.is_empty() {
        let _ = write!(
            h,
            "<p>Signatures by keys not in the directory (ignored): <code>{}</code>.</p>",
            esc(&v.checkpoint.unknown.join(", "))
        );
    }
    let _ = write!(
        h,
        "<details><summary>Signed checkpoint note</summary><pre>{}</pre></details>",
        esc(&String::from_utf8_lossy(&v.checkpoint.note))
    );

    // Flows.
    h.push_str("<h2 id=\"flows\">Flows between countries</h2><div class=\"charts\">");
    let _ = write!(
        h,
        "<figure>{}<figcaption>Accepted transfers, sending country (rows) to receiving country \
         (columns); an envelope to several agencies of one country counts once.</figcaption>\
         </figure>",
        flow_matrix_svg("Accepted transfers", &sum.accepted_flows)
    );
    let _ = write!(
        h,
        "<figure>{}<figcaption>Refused submissions, counted the same way.</figcaption></figure>",
        flow_matrix_svg("Refused submissions", &sum.refused_flows)
    );
    h.push_str("</div>");

    // Totals.
    h.push_str("<h2 id=\"totals\">Entries by decision</h2><table><tr><th>decision</th><th>entries</th></tr>");
    for (d, n) in &sum.by_decision {
        let _ = write!(h, "<tr><td>{}</td><td class=\"n\">{n}</td></tr>", esc(d));
    }
    let _ = write!(
        h,
        "<tr><th>total</th><td class=\"n\">{}</td></tr></table>",
        sum.entries
    );

    // Agencies.
    h.push_str("<h2 id=\"agencies\">Agencies</h2>");
    if sum.agencies.is_empty() {
        h.push_str("<p>No exchanges.</p>");
    }
    for (id, st) in &sum.agencies {
        let name = input
            .agency_names
            .get(id)
            .map(|n| format!(" — {n}"))
            .unwrap_or_default();
        let _ = write!(
            h,
            "<section class=\"agency\"><h3>{}{}</h3><div class=\"grid\">",
            esc(id),
            esc(&name)
        );
        counts_table(
            &mut h,
            "By kind",
            COUNT_COLUMNS,
            st.by_kind.iter().map(|(k, v)| (k.clone(), v.cells())),
        );
        counts_table(
            &mut h,
            "By purpose",
            COUNT_COLUMNS,
            st.by_purpose.iter().map(|(k, v)| (k.clone(), v.cells())),
        );
        counts_table(
            &mut h,
            "By decision",
            ["as sender", "as recipient"],
            st.by_decision.iter().map(|(k, v)| ((*k).to_string(), *v)),
        );
        h.push_str("</div>");
        rows_table(&mut h, "Accepted transfers it sent", &st.accepted);
        rows_table(&mut h, "Refusals", &st.refusals);
        rows_table(&mut h, "Rejected by the receiving node", &st.rejections);
        rows_table(&mut h, "Content violations", &st.violations);
        h.push_str("</section>");
    }
    if !sum.unattributed.is_empty() {
        h.push_str("<h2 id=\"unattributed\">Not attributable to an agency</h2>");
        rows_table(&mut h, "Entries", &sum.unattributed);
    }
    h.push_str("<h2 id=\"federation\">Directory, policy and purges</h2>");
    if sum.federation_events.is_empty() {
        h.push_str("<p>None.</p>");
    } else {
        h.push_str("<div class=\"scroll\"><table><tr><th>index</th><th>time</th><th>event</th><th>by</th><th>detail</th><th>policy bundle</th></tr>");
        for r in &sum.federation_events {
            let _ = write!(
                h,
                "<tr><td class=\"n\">{}</td><td>{}</td><td>{}</td><td>{}</td><td class=\"text\">{}</td>\
                 <td><code>{}</code></td></tr>",
                r.index,
                esc(&crate::protocol::time::format_ms(r.at_ms)),
                esc(r.event),
                esc(&r.sender),
                esc(&r.reason),
                esc(&r.policy_bundle_hash)
            );
        }
        h.push_str("</table></div>");
    }
    h.push_str("</body></html>\n");
    h
}

/// `casebridge audit report --out FILE`: verifies the log like `verify`
/// (saving the checkpoint), then writes the report built from the verified
/// entries. Returns the verification the report embeds, for the command to
/// print.
pub async fn report(
    profile: &Path,
    directory: Option<&Path>,
    out: &Path,
) -> anyhow::Result<VerifyReport> {
    let mut auditor = Auditor::connect(profile, directory)?;
    let mut summary = LogSummary::default();
    let verified = verify_log(&mut auditor, |i, ev| summary.add(i, ev)).await?;
    let agency_names: BTreeMap<String, String> = auditor
        .directory
        .agencies()
        .map(|a| (a.id.to_string(), a.display_name.clone()))
        .collect();
    let html = render_report(&ReportInput {
        federation: &auditor.profile.federation,
        auditor: &auditor.profile.auditor,
        broker: &auditor.profile.broker,
        generated_at_ms: crate::daemon::clock::now_ms(),
        verified: &verified,
        summary: &summary,
        agency_names: &agency_names,
    });
    let tmp = out.with_extension("html.tmp");
    std::fs::write(&tmp, html.as_bytes())
        .and_then(|()| std::fs::rename(&tmp, out))
        .with_context(|| format!("writing {}", out.display()))?;
    Ok(verified)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::merkle;
    use crate::tools::audit::test_support::*;

    #[test]
    fn report_is_self_contained_and_escaped() {
        let (summary, verified) = report_of(&synthetic_log());
        let names: BTreeMap<String, String> =
            [("HR/police".to_string(), "Criminal police <HR>".to_string())].into();
        let html = render_report(&ReportInput {
            federation: "casebridge.test",
            auditor: "auditor",
            broker: "127.0.0.1:7400",
            generated_at_ms: 1_700_000_000_000,
            verified: &verified,
            summary: &summary,
            agency_names: &names,
        });
        assert!(html.starts_with("<!DOCTYPE html>"));
        assert!(html.ends_with("</html>\n"));
        // Nothing from outside the file.
        for external in ["<script", "<link", "src=", "url(", "@import", "https://"] {
            assert!(!html.contains(external), "{external}");
        }
        // Peer text is escaped, never markup.
        assert!(html.contains("&lt;script&gt;alert(1)&lt;/script&gt;"));
        assert!(
            html.contains("forbidden by &lt;framework&gt; &amp; &quot;H3&quot;, &#39;quoted&#39;")
        );
        assert!(html.contains("Criminal police &lt;HR&gt;"));
        // The checkpoint and the witnesses.
        assert!(html.contains("casebridge.test/audit-log"));
        assert!(html.contains(&STANDARD.encode(merkle::leaf_hash(b"root"))));
        assert!(html.contains("casebridge.test/node/HR"));
        assert!(html.contains("Not cosigned by: RS."));
        assert!(html.contains("saved at size 3"));
        // The charts, with their cells.
        assert_eq!(html.matches("<svg").count(), 2);
        assert!(html.contains("<title>HR → RS: 2</title>"));
        assert!(html.contains("undeclared-categories"));
        // Counts say how far each transfer went; accepted transfers are
        // listed by envelope id; rows say kind and purpose.
        for heading in ["sent", "refused at node", "refused by broker", "received"] {
            assert!(html.contains(&format!("<th>{heading}</th>")), "{heading}");
        }
        assert!(html.contains("Accepted transfers it sent (1)"));
        assert!(html.contains("<code>01010101-0101-0101-0101-010101010101</code>"));
        assert!(
            html.contains("<td>wanted-alert</td><td>prosecution / european-mla-convention</td>")
        );
        // No cell wraps letter by letter: short cells do not wrap at all.
        assert!(!html.contains("anywhere"));
        assert!(html.contains("white-space:nowrap"));
        // The verification the command printed is in the report.
        assert!(html.contains("The verification, as the command printed it"));
        assert!(html.contains(&html_escape(verified.lines()[0].as_str()).into_owned()));
        // Balanced tables.
        assert_eq!(
            html.matches("<table").count(),
            html.matches("</table>").count()
        );
        assert_eq!(
            html.matches("<section").count(),
            html.matches("</section>").count()
        );
    }

    #[test]
    fn empty_flows_render_an_empty_chart() {
        let svg = flow_matrix_svg("Nothing <here>", &BTreeMap::new());
        assert!(svg.contains("Nothing &lt;here&gt;"));
        assert!(svg.ends_with("</svg>"));
    }
}
