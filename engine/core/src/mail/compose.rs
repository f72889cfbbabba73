//! From the evaluator's decisions to messages: templates rendered with the
//! lead as it is at decision time, links signed, a stable Message-ID. Pure:
//! the same ruleset, lead and effect always give the same message, which is
//! what makes a resend after a crash the *same* message.

use super::token::{Secret, TokenKind};
use crate::eval::Effect;
use crate::model::{time, time::Timestamp, LeadState};
use crate::rules::Ruleset;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use sha2::{Digest, Sha256};

/// `From` when the rules set none (owner notifications still need one).
pub const DEFAULT_FROM: &str = "Nurture <nurture@localhost>";

/// A message ready to go: what an outbox row of kind `email` or
/// `notification` holds.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Outgoing {
    /// `<id@domain>`: the receiver's de-duplication key.
    pub message_id: String,
    pub from: String,
    pub to: String,
    pub subject: String,
    pub text: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub html: Option<String>,
    /// Marketing mail only: the RFC 8058 one-click link and its mailto twin.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub unsubscribe: Option<Unsubscribe>,
    /// What it is, for the timeline: `campaign/step`, `assigned`, `offered`, `sla_breach`.
    pub what: String,
}

impl Outgoing {
    pub fn is_marketing(&self) -> bool {
        self.unsubscribe.is_some()
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Unsubscribe {
    pub url: String,
    pub mailto: String,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ComposeError {
    #[error("template {template:?} does not exist")]
    NoTemplate { template: String },
    #[error("template {template:?}, {part}: {message}")]
    Render {
        template: String,
        part: &'static str,
        message: String,
    },
    #[error("lead has no email address")]
    NoAddress,
    #[error("owner {0:?} is not in the rules")]
    NoOwner(String),
}

/// What messages need besides the rules: where links point and what signs them.
#[derive(Clone)]
pub struct Links {
    /// Public base URL of this daemon, without a trailing slash.
    pub base_url: String,
    pub secret: Secret,
}

/// Renders the rules' templates; built once per ruleset.
pub struct Composer {
    env: minijinja::Environment<'static>,
    from: String,
    links: Links,
}

impl Composer {
    pub fn new(rules: &Ruleset, links: Links) -> Composer {
        let mut env = minijinja::Environment::new();
        // Plain-text bodies and subjects must not be HTML-escaped; HTML
        // bodies are (values from lead data can never inject markup).
        env.set_auto_escape_callback(|name| {
            if name.ends_with(".html") {
                minijinja::AutoEscape::Html
            } else {
                minijinja::AutoEscape::None
            }
        });
        for (name, t) in &rules.templates {
            // Syntax was checked when the rules were loaded; a template that
            // still fails to add is reported when it is rendered.
            let _ = env.add_template_owned(format!("{name}.subject"), t.subject.clone());
            let _ = env.add_template_owned(format!("{name}.text"), t.text.clone());
            if let Some(html) = &t.html {
                let _ = env.add_template_owned(format!("{name}.html"), html.clone());
            }
        }
        let from = rules
            .settings
            .from
            .clone()
            .unwrap_or_else(|| DEFAULT_FROM.to_string());
        Composer {
            env,
            from,
            links: links.clone(),
        }
    }

    /// The messages an effect asks for (none for effects that are not mail).
    pub fn compose(
        &self,
        rules: &Ruleset,
        lead: &LeadState,
        effect: &Effect,
        at: Timestamp,
    ) -> Result<Vec<Outgoing>, ComposeError> {
        match effect {
            Effect::SendEmail {
                campaign,
                cycle,
                step,
                template,
            } => self
                .drip(lead, campaign, *cycle, *step, template)
                .map(|m| vec![m]),
            Effect::NotifyOwner { owner, email, rule } => {
                let subject = format!("New lead for you: {}", display_name(lead));
                let intro = format!(
                    "Lead {} was assigned to you ({owner}) by routing rule {rule:?}.",
                    lead.id
                );
                let key = format!("assigned\0{}\0{owner}\0{}", lead.id, at.timestamp_millis());
                Ok(vec![self.notice(lead, email, subject, intro, "assigned", &key)])
            }
            Effect::OfferToOwners { owners, rule } => owners
                .iter()
                .map(|o| {
                    let owner = rules
                        .owners
                        .iter()
                        .find(|x| &x.id == o)
                        .ok_or_else(|| ComposeError::NoOwner(o.clone()))?;
                    let subject = format!("Lead up for grabs: {}", display_name(lead));
                    let intro = format!(
                        "Lead {} can be claimed (routing rule {rule:?}): POST /v1/leads/{}/claim with {{\"owner\": \"{o}\"}}. First claim wins.",
                        lead.id, lead.id
                    );
                    let key = format!("offered\0{}\0{o}\0{}", lead.id, at.timestamp_millis());
                    Ok(self.notice(lead, &owner.email, subject, intro, "offered", &key))
                })
                .collect(),
            Effect::NotifySlaBreach { to, owner } => {
                let subject = format!("SLA missed: {} by {owner}", display_name(lead));
                let intro = format!(
                    "{owner} gave no feedback on lead {} in time (as of {}).",
                    lead.id,
                    time::format(&at)
                );
                let key = format!("sla\0{}\0{owner}\0{}", lead.id, at.timestamp_millis());
                Ok(vec![self.notice(lead, to, subject, intro, "sla_breach", &key)])
            }
            _ => Ok(Vec::new()),
        }
    }

    /// The Message-ID of drip step `step` (1-based) of `lead`'s enrollment
    /// in `campaign` in `cycle`: one message per step per enrollment, so
    /// resends reuse it and a step already queued can be told.
    pub fn drip_message_id(&self, lead: &str, campaign: &str, cycle: u32, step: usize) -> String {
        let key = format!("drip\0{lead}\0{campaign}\0{cycle}\0{step}");
        message_id(&key, &self.from)
    }

    fn drip(
        &self,
        lead: &LeadState,
        campaign: &str,
        cycle: u32,
        step: usize,
        template: &str,
    ) -> Result<Outgoing, ComposeError> {
        if lead.email.is_empty() {
            return Err(ComposeError::NoAddress);
        }
        let token = self.links.secret.sign(TokenKind::Unsubscribe, &lead.id);
        let url = format!("{}/unsubscribe/{token}", self.links.base_url);
        let ctx = json!({
            "lead": lead_view(lead),
            "unsubscribe_url": url,
            "campaign": campaign,
            "step": step,
        });
        let render = |part: &'static str| -> Result<Option<String>, ComposeError> {
            let name = format!("{template}.{part}");
            let t = match self.env.get_template(&name) {
                Ok(t) => t,
                Err(_) if part == "html" => return Ok(None),
                Err(_) => {
                    return Err(ComposeError::NoTemplate {
                        template: template.to_string(),
                    })
                }
            };
            t.render(&ctx).map(Some).map_err(|e| ComposeError::Render {
                template: template.to_string(),
                part,
                message: e.to_string(),
            })
        };
        let subject = render("subject")?.unwrap_or_default();
        let text = render("text")?.unwrap_or_default();
        let html = render("html")?;
        let mailto = format!(
            "mailto:{}?subject=unsubscribe%20{token}",
            address_of(&self.from)
        );
        Ok(Outgoing {
            message_id: self.drip_message_id(&lead.id, campaign, cycle, step),
            from: self.from.clone(),
            to: lead.email.clone(),
            subject: one_line(&subject),
            text,
            html,
            unsubscribe: Some(Unsubscribe { url, mailto }),
            what: format!("{campaign}/{step}"),
        })
    }

    /// A transactional notice to sales: the lead's summary and why it scored.
    fn notice(
        &self,
        lead: &LeadState,
        to: &str,
        subject: String,
        intro: String,
        what: &str,
        key: &str,
    ) -> Outgoing {
        let mut text = format!("{intro}\n\n");
        text.push_str(&format!(
            "Lead:    {}\nEmail:   {}\nStage:   {}\nScore:   {}\nFit:     {}\n",
            lead.id,
            if lead.email.is_empty() {
                "-"
            } else {
                &lead.email
            },
            lead.stage,
            lead.score,
            lead.fit
        ));
        let breakdown = lead.score_breakdown();
        if !breakdown.is_empty() {
            text.push_str("\nScore by rule:\n");
            for (rule, points) in breakdown {
                text.push_str(&format!("  {points:>6}  {rule}\n"));
            }
        }
        if !lead.fit_breakdown.is_empty() {
            text.push_str("\nFit by rule:\n");
            for (rule, points) in &lead.fit_breakdown {
                text.push_str(&format!("  {points:>6}  {rule}\n"));
            }
        }
        text.push_str(&format!(
            "\nDetails: {}/v1/leads/{}\n",
            self.links.base_url, lead.id
        ));
        Outgoing {
            message_id: message_id(key, &self.from),
            from: self.from.clone(),
            to: to.to_string(),
            subject: one_line(&subject),
            text,
            html: None,
            unsubscribe: None,
            what: what.to_string(),
        }
    }
}

/// What templates see as `lead`: the fields of SPEC section 1.
fn lead_view(lead: &LeadState) -> Value {
    json!({
        "id": lead.id,
        "email": lead.email,
        "attributes": lead.attributes,
        "score": lead.score,
        "fit": lead.fit,
        "stage": lead.stage.as_str(),
        "owner": lead.owner.clone().unwrap_or_default(),
        "consent": lead.consent.as_str(),
        "created_at": time::format(&lead.created_at),
        "last_activity_at": time::format(&lead.last_activity_at),
    })
}

fn display_name(lead: &LeadState) -> String {
    let first = lead.attributes.get("first_name").and_then(Value::as_str);
    let company = lead.attributes.get("company").and_then(Value::as_str);
    match (first, company) {
        (Some(f), Some(c)) => format!("{f} ({c})"),
        (Some(f), None) => f.to_string(),
        (None, Some(c)) => c.to_string(),
        (None, None) => lead.id.clone(),
    }
}

/// Header text on one line: control characters (CR, LF, ...) become spaces,
/// so lead data can never start a header of its own.
pub fn one_line(s: &str) -> String {
    s.chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect::<String>()
        .trim()
        .to_string()
}

/// The bare address of `Name <addr>` or `addr`.
pub fn address_of(mailbox: &str) -> &str {
    match (mailbox.rfind('<'), mailbox.rfind('>')) {
        (Some(a), Some(b)) if a < b => &mailbox[a + 1..b],
        _ => mailbox.trim(),
    }
}

/// A Message-ID derived from what the message is, in the sender's domain.
fn message_id(key: &str, from: &str) -> String {
    let digest = Sha256::digest(key.as_bytes());
    let hex: String = digest[..16].iter().map(|b| format!("{b:02x}")).collect();
    let domain = address_of(from)
        .rsplit_once('@')
        .map(|(_, d)| d)
        .filter(|d| !d.is_empty())
        .unwrap_or("nurture.invalid");
    format!("<{hex}@{domain}>")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rules(yaml: &str) -> Ruleset {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("r.yaml"), yaml).unwrap();
        Ruleset::load(dir.path()).unwrap_or_else(|d| panic!("{d}"))
    }

    const RULES: &str = r#"
templates:
  - name: hi
    subject: "Hi {{ lead.attributes.first_name | default('there') }}"
    text: "Text for {{ lead.email }} {{ campaign }}/{{ step }}: {{ unsubscribe_url }}"
    html: "<p>{{ lead.attributes.first_name }}</p>"
campaigns:
  - name: c
    enroll: 'true'
    steps: [ { after: 0d, template: hi } ]
settings:
  email: { from: "Acme <hello@acme.example>" }
"#;

    fn composer(r: &Ruleset) -> Composer {
        Composer::new(
            r,
            Links {
                base_url: "https://n.example".into(),
                secret: Secret::new(b"k".to_vec()),
            },
        )
    }

    fn lead() -> LeadState {
        let mut l = LeadState::new("u1", time::parse("2026-01-01T00:00:00Z").unwrap());
        l.email = "ann@x.example".into();
        l.attributes
            .insert("first_name".into(), json!("Ann\r\nBcc: evil@x.example <b>"));
        l
    }

    #[test]
    fn drips_render_templates_sign_links_and_keep_headers_on_one_line() {
        let r = rules(RULES);
        let c = composer(&r);
        let at = time::parse("2026-01-02T00:00:00Z").unwrap();
        let effect = Effect::SendEmail {
            campaign: "c".into(),
            cycle: 0,
            step: 1,
            template: "hi".into(),
        };
        let m = c.compose(&r, &lead(), &effect, at).unwrap().remove(0);
        assert_eq!(m.subject, "Hi Ann  Bcc: evil@x.example <b>");
        assert!(m
            .text
            .starts_with("Text for ann@x.example c/1: https://n.example/unsubscribe/"));
        // HTML bodies escape lead data.
        assert_eq!(
            m.html.as_deref(),
            Some("<p>Ann\r\nBcc: evil@x.example &lt;b&gt;</p>")
        );
        let u = m.unsubscribe.as_ref().unwrap();
        let token = u.url.rsplit('/').next().unwrap();
        assert_eq!(
            c.links
                .secret
                .verify(TokenKind::Unsubscribe, token)
                .as_deref(),
            Ok("u1")
        );
        assert!(u
            .mailto
            .starts_with("mailto:hello@acme.example?subject=unsubscribe%20"));
        assert!(m.message_id.ends_with("@acme.example>"));
        // The same step gives the same message; another step another id.
        let again = c.compose(&r, &lead(), &effect, at).unwrap().remove(0);
        assert_eq!(again, m);
        let step2 = Effect::SendEmail {
            campaign: "c".into(),
            cycle: 0,
            step: 2,
            template: "hi".into(),
        };
        let other = c.compose(&r, &lead(), &step2, at).unwrap().remove(0);
        assert_ne!(other.message_id, m.message_id);
        // The enrollment's cycle names the message, not the lead's (a lead
        // recycled while enrolled finishes the old enrollment).
        let next_cycle = Effect::SendEmail {
            campaign: "c".into(),
            cycle: 1,
            step: 1,
            template: "hi".into(),
        };
        let mut recycled = lead();
        recycled.cycle = 1;
        let old = c.compose(&r, &recycled, &effect, at).unwrap().remove(0);
        assert_eq!(old.message_id, m.message_id);
        let new = c.compose(&r, &lead(), &next_cycle, at).unwrap().remove(0);
        assert_ne!(new.message_id, m.message_id);
    }

    #[test]
    fn owner_notices_summarise_the_score_and_carry_no_unsubscribe() {
        let r = rules(RULES);
        let c = composer(&r);
        let mut l = lead();
        l.record_points(crate::model::LedgerEntry {
            rule: "pricing".into(),
            points: 30,
            event: Some("e1".into()),
            at: l.created_at,
            reason: None,
        });
        let effect = Effect::NotifyOwner {
            owner: "anna".into(),
            email: "anna@acme.example".into(),
            rule: "default".into(),
        };
        let m = c.compose(&r, &l, &effect, l.created_at).unwrap().remove(0);
        assert_eq!(m.to, "anna@acme.example");
        assert!(m.unsubscribe.is_none());
        assert!(m.text.contains("      30  pricing"), "{}", m.text);
        assert!(!m.subject.contains('\n'));
    }

    #[test]
    fn check_knows_the_fields_templates_see() {
        let view = lead_view(&lead());
        let mut keys: Vec<&str> = view
            .as_object()
            .unwrap()
            .keys()
            .map(String::as_str)
            .collect();
        let mut known = crate::rules::templates::LEAD_FIELDS.to_vec();
        keys.sort_unstable();
        known.sort_unstable();
        assert_eq!(keys, known);
    }

    #[test]
    fn a_lead_without_address_or_a_failing_template_is_an_error() {
        // `check` refuses unknown filters; text plus a number fails only when rendered.
        let r = rules(&RULES.replace("{{ lead.email }}", "{{ lead.email + 1 }}"));
        let c = composer(&r);
        let effect = Effect::SendEmail {
            campaign: "c".into(),
            cycle: 0,
            step: 1,
            template: "hi".into(),
        };
        let at = lead().created_at;
        let mut l = lead();
        l.email.clear();
        assert_eq!(c.compose(&r, &l, &effect, at), Err(ComposeError::NoAddress));
        assert!(matches!(
            c.compose(&r, &lead(), &effect, at),
            Err(ComposeError::Render { part: "text", .. })
        ));
    }
}
