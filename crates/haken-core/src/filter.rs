//! The SCIM-style filter language of Okta's management API, as accepted by
//! `GET /api/v1/users?filter=` and `GET /api/v1/logs?filter=`.
//!
//! A filter is parsed once with [`parse`] into a [`Filter`] tree, which can then be
//! evaluated in memory against any JSON document with [`Filter::matches`]. Stores that
//! can answer some predicates from an index use [`Filter::conjuncts`] to pick them out
//! and evaluate the rest in memory; [`Filter::paths`] lets a caller reject unknown
//! attributes up front with a clear message.
//!
//! Grammar (keywords are case-insensitive, attribute names are case-sensitive):
//!
//! ```text
//! filter     = or-expr
//! or-expr    = and-expr *( "or" and-expr )
//! and-expr   = unary *( "and" unary )
//! unary      = "not" "(" or-expr ")" / "(" or-expr ")" / comparison
//! comparison = attrpath "pr" / attrpath op value
//! op         = "eq" / "ne" / "gt" / "ge" / "lt" / "le" / "sw" / "co" / "ew"
//! attrpath   = name *( "." name )        ; name = [A-Za-z_$] [A-Za-z0-9_$-]*
//! value      = json-string / json-number / "true" / "false" / "null"
//! ```
//!
//! Error positions are 0-based offsets in *characters* (not bytes), so they line up
//! with what a person sees when the filter contains non-ASCII text.

use std::cmp::Ordering;
use std::fmt;

use serde_json::{Number, Value};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

/// Longest filter accepted, in bytes. Real filters are a few hundred bytes at most; the
/// cap bounds parse time and the size of the tree built from untrusted input.
pub const MAX_FILTER_LEN: usize = 4096;

/// Deepest parenthesis nesting accepted. The parser is recursive, so hostile input like
/// `((((((...` must be cut off long before it could exhaust the stack.
pub const MAX_DEPTH: usize = 64;

/// Arrays nested inside arrays are searched this deep at most, so that evaluation stays
/// bounded even for documents built in code rather than parsed (which `serde_json` caps).
const MAX_ARRAY_NESTING: usize = 32;

/// A comparison operator.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Op {
    Eq,
    Ne,
    Gt,
    Ge,
    Lt,
    Le,
    Sw,
    Co,
    Ew,
}

impl Op {
    const ALL: [Op; 9] = [Op::Eq, Op::Ne, Op::Gt, Op::Ge, Op::Lt, Op::Le, Op::Sw, Op::Co, Op::Ew];

    /// The canonical (lowercase) keyword.
    #[must_use]
    pub const fn as_str(self) -> &'static str {
        match self {
            Op::Eq => "eq",
            Op::Ne => "ne",
            Op::Gt => "gt",
            Op::Ge => "ge",
            Op::Lt => "lt",
            Op::Le => "le",
            Op::Sw => "sw",
            Op::Co => "co",
            Op::Ew => "ew",
        }
    }

    fn from_keyword(word: &str) -> Option<Op> {
        Op::ALL.into_iter().find(|op| word.eq_ignore_ascii_case(op.as_str()))
    }
}

impl fmt::Display for Op {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A parsed filter expression.
///
/// `Display` renders it back as filter text that [`parse`] accepts and that yields an
/// equal tree, which is handy for logs and for forwarding a normalised filter.
#[derive(Debug, Clone, PartialEq)]
pub enum Filter {
    And(Box<Filter>, Box<Filter>),
    Or(Box<Filter>, Box<Filter>),
    Not(Box<Filter>),
    Compare { path: String, op: Op, value: Value },
    Present { path: String },
}

/// Why a filter was rejected.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FilterError {
    /// 0-based character (not byte) offset into the input.
    pub position: usize,
    pub message: String,
}

impl FilterError {
    fn new(position: usize, message: impl Into<String>) -> Self {
        FilterError { position, message: message.into() }
    }
}

impl fmt::Display for FilterError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "at position {}: {}", self.position, self.message)
    }
}

impl std::error::Error for FilterError {}

/// Which optional parts of the language a caller accepts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Syntax {
    /// Accept `co` and `ew` (Okta's users endpoint rejects them; the logs endpoint takes them).
    pub allow_contains_ends_with: bool,
    /// Accept `not (...)`.
    pub allow_not: bool,
}

impl Syntax {
    /// `GET /api/v1/users?filter=`: everything except `co` and `ew`.
    pub const USERS: Syntax = Syntax { allow_contains_ends_with: false, allow_not: true };
    /// `GET /api/v1/logs?filter=`: the whole language.
    pub const LOGS: Syntax = Syntax { allow_contains_ends_with: true, allow_not: true };
}

/// Parses `input` into a [`Filter`], accepting only what `syntax` allows.
///
/// # Errors
///
/// Returns a [`FilterError`] naming the character position of the first problem: empty
/// or over-long input ([`MAX_FILTER_LEN`]), a malformed string or number, an unknown or
/// disallowed operator, a missing value or `)`, trailing input, or nesting deeper than
/// [`MAX_DEPTH`].
pub fn parse(input: &str, syntax: Syntax) -> Result<Filter, FilterError> {
    if input.len() > MAX_FILTER_LEN {
        // Point at the first character that does not fit, counted in characters like
        // every other position.
        let position = input.char_indices().take_while(|(byte, _)| *byte < MAX_FILTER_LEN).count();
        return Err(FilterError::new(
            position,
            format!("filter is too long ({} bytes; at most {MAX_FILTER_LEN} are allowed)", input.len()),
        ));
    }
    if input.chars().all(char::is_whitespace) {
        return Err(FilterError::new(0, "empty filter"));
    }
    let mut parser = Parser { chars: input.chars().collect(), pos: 0, peeked: None, syntax, depth: 0 };
    let filter = parser.parse_or()?;
    let tok = parser.next()?;
    match tok.kind {
        TokenKind::End => Ok(filter),
        TokenKind::RParen => Err(FilterError::new(tok.start, "unexpected ')' without a matching '('")),
        _ => Err(FilterError::new(
            tok.start,
            format!("expected 'and', 'or' or end of input, found {}", parser.describe(&tok)),
        )),
    }
}

impl Filter {
    /// Evaluates the filter against a JSON document.
    ///
    /// Attribute paths walk objects by key and fan out over arrays at any level, and a
    /// comparison holds if any reached value satisfies it. A path that reaches nothing
    /// makes every comparison false except `ne`, which is defined as `not eq`.
    ///
    /// - `eq`: strings exactly (case-sensitive), numbers numerically (`1` equals `1.0`),
    ///   booleans and null by JSON equality (`eq null` needs an explicit null); types
    ///   never match across kinds.
    /// - `sw`, `co`, `ew`: strings only, case-insensitively.
    /// - `gt`, `ge`, `lt`, `le`: numbers numerically; strings as instants when both sides
    ///   are RFC 3339 timestamps, otherwise lexicographically; mixed types never match.
    /// - `pr`: some reached value is not null, `""` or `[]`.
    #[must_use]
    pub fn matches(&self, doc: &Value) -> bool {
        match self {
            Filter::And(left, right) => left.matches(doc) && right.matches(doc),
            Filter::Or(left, right) => left.matches(doc) || right.matches(doc),
            Filter::Not(inner) => !inner.matches(doc),
            Filter::Present { path } => any_at(doc, Some(path), 0, &mut is_present),
            Filter::Compare { path, op, value } => match op {
                Op::Eq => any_at(doc, Some(path), 0, &mut |v| json_eq(v, value)),
                Op::Ne => !any_at(doc, Some(path), 0, &mut |v| json_eq(v, value)),
                Op::Gt | Op::Ge | Op::Lt | Op::Le => any_at(doc, Some(path), 0, &mut |v| ordered(v, *op, value)),
                Op::Sw | Op::Co | Op::Ew => {
                    let Value::String(needle) = value else {
                        return false;
                    };
                    let needle = needle.to_lowercase();
                    any_at(doc, Some(path), 0, &mut |v| text_match(v, *op, &needle))
                }
            },
        }
    }

    /// The top-level AND-ed terms, left to right, with nested `And`s flattened. A filter
    /// that is not an `And` is its own single conjunct.
    #[must_use]
    pub fn conjuncts(&self) -> Vec<&Filter> {
        let mut out = Vec::new();
        // An explicit stack, because a long `a and b and c ...` chain is a deep
        // left-leaning tree.
        let mut stack = vec![self];
        while let Some(filter) = stack.pop() {
            match filter {
                Filter::And(left, right) => {
                    stack.push(right);
                    stack.push(left);
                }
                other => out.push(other),
            }
        }
        out
    }

    /// Every attribute path mentioned, in order of first appearance, without duplicates.
    #[must_use]
    pub fn paths(&self) -> Vec<&str> {
        let mut out: Vec<&str> = Vec::new();
        let mut stack = vec![self];
        while let Some(filter) = stack.pop() {
            match filter {
                Filter::And(left, right) | Filter::Or(left, right) => {
                    stack.push(right);
                    stack.push(left);
                }
                Filter::Not(inner) => stack.push(inner),
                Filter::Compare { path, .. } | Filter::Present { path } => {
                    if !out.contains(&path.as_str()) {
                        out.push(path);
                    }
                }
            }
        }
        out
    }
}

impl fmt::Display for Filter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Parentheses are emitted only where needed to reproduce the same tree: the
        // parser is left-associative and `and` binds tighter than `or`.
        fn operand(f: &mut fmt::Formatter<'_>, filter: &Filter, wrap: bool) -> fmt::Result {
            if wrap { write!(f, "({filter})") } else { write!(f, "{filter}") }
        }
        match self {
            Filter::Or(left, right) => {
                operand(f, left, false)?;
                f.write_str(" or ")?;
                operand(f, right, matches!(**right, Filter::Or(..)))
            }
            Filter::And(left, right) => {
                operand(f, left, matches!(**left, Filter::Or(..)))?;
                f.write_str(" and ")?;
                operand(f, right, matches!(**right, Filter::Or(..) | Filter::And(..)))
            }
            Filter::Not(inner) => write!(f, "not ({inner})"),
            Filter::Present { path } => write!(f, "{path} pr"),
            Filter::Compare { path, op, value } => write!(f, "{path} {op} {value}"),
        }
    }
}

// ---------------------------------------------------------------------------
// Evaluation
// ---------------------------------------------------------------------------

/// Calls `pred` on every value reachable through `path` (a dotted remainder, `None` once
/// fully walked) and reports whether any satisfied it. Arrays are transparent: each
/// element is walked with the same remaining path.
fn any_at(value: &Value, path: Option<&str>, array_depth: usize, pred: &mut dyn FnMut(&Value) -> bool) -> bool {
    match (value, path) {
        (Value::Array(items), _) => {
            array_depth < MAX_ARRAY_NESTING && items.iter().any(|item| any_at(item, path, array_depth + 1, &mut *pred))
        }
        (_, None) => pred(value),
        (Value::Object(map), Some(path)) => {
            let (key, rest) = match path.split_once('.') {
                Some((key, rest)) => (key, Some(rest)),
                None => (path, None),
            };
            map.get(key).is_some_and(|child| any_at(child, rest, array_depth, pred))
        }
        _ => false,
    }
}

fn is_present(value: &Value) -> bool {
    // Empty arrays never reach here (`any_at` finds no element in them), so only null and
    // the empty string need excluding.
    match value {
        Value::Null => false,
        Value::String(s) => !s.is_empty(),
        _ => true,
    }
}

fn json_eq(actual: &Value, literal: &Value) -> bool {
    match (actual, literal) {
        (Value::Number(a), Value::Number(b)) => cmp_numbers(a, b) == Some(Ordering::Equal),
        (Value::String(a), Value::String(b)) => a == b,
        (Value::Bool(a), Value::Bool(b)) => a == b,
        (Value::Null, Value::Null) => true,
        _ => false,
    }
}

fn ordered(actual: &Value, op: Op, literal: &Value) -> bool {
    let ordering = match (actual, literal) {
        (Value::Number(a), Value::Number(b)) => cmp_numbers(a, b),
        (Value::String(a), Value::String(b)) => Some(cmp_strings(a, b)),
        _ => None,
    };
    ordering.is_some_and(|ordering| match op {
        Op::Gt => ordering.is_gt(),
        Op::Ge => ordering.is_ge(),
        Op::Lt => ordering.is_lt(),
        Op::Le => ordering.is_le(),
        _ => false,
    })
}

fn text_match(actual: &Value, op: Op, lowered_needle: &str) -> bool {
    let Value::String(actual) = actual else {
        return false;
    };
    let haystack = actual.to_lowercase();
    match op {
        Op::Sw => haystack.starts_with(lowered_needle),
        Op::Co => haystack.contains(lowered_needle),
        Op::Ew => haystack.ends_with(lowered_needle),
        _ => false,
    }
}

/// Integers compare exactly (an `i64` and a `u64` may both be present); anything with a
/// fractional part goes through `f64`, so `1` equals `1.0`.
fn cmp_numbers(a: &Number, b: &Number) -> Option<Ordering> {
    fn integer(n: &Number) -> Option<i128> {
        n.as_i64().map(i128::from).or_else(|| n.as_u64().map(i128::from))
    }
    match (integer(a), integer(b)) {
        (Some(a), Some(b)) => Some(a.cmp(&b)),
        _ => a.as_f64()?.partial_cmp(&b.as_f64()?),
    }
}

/// Timestamps must compare as instants: stored values carry milliseconds
/// (`...00.000Z`) while callers usually omit them (`...00Z`), and byte order would put
/// `Z` after `.`, or mis-order different UTC offsets.
fn cmp_strings(a: &str, b: &str) -> Ordering {
    match (parse_timestamp(a), parse_timestamp(b)) {
        (Some(a), Some(b)) => a.cmp(&b),
        _ => a.cmp(b),
    }
}

fn parse_timestamp(s: &str) -> Option<OffsetDateTime> {
    // Cheap shape check first: most strings compared with gt/lt in a scan are not
    // timestamps, and this keeps the full parser off the hot path for them.
    let bytes = s.as_bytes();
    if bytes.len() < 20 || bytes.get(4) != Some(&b'-') || bytes.get(10).is_none_or(|b| !matches!(b, b'T' | b't' | b' '))
    {
        return None;
    }
    OffsetDateTime::parse(s, &Rfc3339).ok()
}

// ---------------------------------------------------------------------------
// Lexing and parsing
// ---------------------------------------------------------------------------

const VALUE_KINDS: &str = "a double-quoted string, a number, true, false or null";

#[derive(Debug, Clone, PartialEq)]
enum TokenKind {
    LParen,
    RParen,
    /// An attribute path or a keyword; which one depends on where it appears.
    Word(String),
    Str(String),
    Num(Number),
    /// Any other character, kept as a token so the parser can say what it expected
    /// instead of the lexer reporting a bare "unexpected character".
    Other(char),
    End,
}

#[derive(Debug, Clone)]
struct Token {
    kind: TokenKind,
    /// Character offsets of the token in the input.
    start: usize,
    end: usize,
}

fn is_ident_start(c: char) -> bool {
    c.is_ascii_alphabetic() || c == '_' || c == '$'
}

fn is_ident_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '$')
}

/// Recursive-descent parser with one token of lookahead. Tokens are produced on demand so
/// that the first error in reading order is the one reported.
struct Parser {
    chars: Vec<char>,
    pos: usize,
    peeked: Option<Token>,
    syntax: Syntax,
    depth: usize,
}

impl Parser {
    fn peek(&mut self) -> Result<&Token, FilterError> {
        let tok = match self.peeked.take() {
            Some(tok) => tok,
            None => self.lex()?,
        };
        Ok(self.peeked.insert(tok))
    }

    fn next(&mut self) -> Result<Token, FilterError> {
        match self.peeked.take() {
            Some(tok) => Ok(tok),
            None => self.lex(),
        }
    }

    fn peek_keyword(&mut self, keyword: &str) -> Result<bool, FilterError> {
        Ok(matches!(&self.peek()?.kind, TokenKind::Word(w) if w.eq_ignore_ascii_case(keyword)))
    }

    fn text(&self, start: usize, end: usize) -> String {
        self.chars.get(start..end).unwrap_or(&[]).iter().collect()
    }

    /// How a token is named in error messages: its source text, shortened so that a
    /// long string literal does not swamp the message.
    fn describe(&self, tok: &Token) -> String {
        const MAX_CHARS: usize = 32;
        if tok.kind == TokenKind::End {
            return "end of input".to_owned();
        }
        if tok.end - tok.start > MAX_CHARS {
            format!("'{}...'", self.text(tok.start, tok.start + MAX_CHARS))
        } else {
            format!("'{}'", self.text(tok.start, tok.end))
        }
    }

    fn current(&self) -> Option<char> {
        self.chars.get(self.pos).copied()
    }

    fn lex(&mut self) -> Result<Token, FilterError> {
        while self.current().is_some_and(char::is_whitespace) {
            self.pos += 1;
        }
        let start = self.pos;
        let Some(c) = self.current() else {
            return Ok(Token { kind: TokenKind::End, start, end: start });
        };
        let kind = match c {
            '(' => {
                self.pos += 1;
                TokenKind::LParen
            }
            ')' => {
                self.pos += 1;
                TokenKind::RParen
            }
            '"' => TokenKind::Str(self.lex_string()?),
            '-' | '0'..='9' => TokenKind::Num(self.lex_number()?),
            c if is_ident_start(c) => {
                while self.current().is_some_and(|c| is_ident_char(c) || c == '.') {
                    self.pos += 1;
                }
                TokenKind::Word(self.text(start, self.pos))
            }
            other => {
                self.pos += 1;
                TokenKind::Other(other)
            }
        };
        Ok(Token { kind, start, end: self.pos })
    }

    fn lex_string(&mut self) -> Result<String, FilterError> {
        let open = self.pos;
        let unterminated = || FilterError::new(open, "unterminated string (missing closing '\"')");
        self.pos += 1;
        let mut out = String::new();
        loop {
            let c = self.current().ok_or_else(unterminated)?;
            self.pos += 1;
            match c {
                '"' => return Ok(out),
                '\\' => {
                    let backslash = self.pos - 1;
                    let escaped = self.current().ok_or_else(unterminated)?;
                    self.pos += 1;
                    out.push(match escaped {
                        '"' => '"',
                        '\\' => '\\',
                        '/' => '/',
                        'b' => '\u{8}',
                        'f' => '\u{c}',
                        'n' => '\n',
                        'r' => '\r',
                        't' => '\t',
                        'u' => self.lex_unicode_escape(backslash)?,
                        other => {
                            return Err(FilterError::new(
                                backslash,
                                format!(
                                    "invalid escape '\\{other}' in string (valid escapes are \\\", \\\\, \\/, \\b, \\f, \\n, \\r, \\t and \\uXXXX)"
                                ),
                            ));
                        }
                    });
                }
                c => out.push(c),
            }
        }
    }

    /// Decodes the `XXXX` after `\u`, joining a UTF-16 surrogate pair written as two
    /// escapes, as JSON requires for characters outside the Basic Multilingual Plane.
    fn lex_unicode_escape(&mut self, backslash: usize) -> Result<char, FilterError> {
        let high = self.hex4(backslash)?;
        let code = match high {
            0xD800..=0xDBFF => {
                let low_at = self.pos;
                let low = if self.current() == Some('\\') && self.chars.get(self.pos + 1) == Some(&'u') {
                    self.pos += 2;
                    Some(self.hex4(low_at)?)
                } else {
                    None
                };
                match low {
                    Some(low @ 0xDC00..=0xDFFF) => 0x10000 + ((high - 0xD800) << 10) + (low - 0xDC00),
                    _ => {
                        return Err(FilterError::new(
                            backslash,
                            "invalid unicode escape: high surrogate not followed by a low surrogate",
                        ));
                    }
                }
            }
            0xDC00..=0xDFFF => {
                return Err(FilterError::new(backslash, "invalid unicode escape: unpaired low surrogate"));
            }
            other => other,
        };
        char::from_u32(code).ok_or_else(|| FilterError::new(backslash, "invalid unicode escape"))
    }

    fn hex4(&mut self, backslash: usize) -> Result<u32, FilterError> {
        let mut code = 0;
        for _ in 0..4 {
            let digit = self.current().and_then(|c| c.to_digit(16)).ok_or_else(|| {
                FilterError::new(backslash, "invalid unicode escape (expected four hex digits after '\\u')")
            })?;
            code = code * 16 + digit;
            self.pos += 1;
        }
        Ok(code)
    }

    fn eat_digits(&mut self) -> usize {
        let start = self.pos;
        while self.current().is_some_and(|c| c.is_ascii_digit()) {
            self.pos += 1;
        }
        self.pos - start
    }

    fn lex_number(&mut self) -> Result<Number, FilterError> {
        let start = self.pos;
        if self.current() == Some('-') {
            self.pos += 1;
        }
        if self.eat_digits() == 0 {
            return Err(FilterError::new(self.pos, "expected a digit after '-'"));
        }
        let mut integral = true;
        if self.current() == Some('.') {
            self.pos += 1;
            integral = false;
            if self.eat_digits() == 0 {
                return Err(FilterError::new(self.pos, "expected a digit after the decimal point"));
            }
        }
        if matches!(self.current(), Some('e' | 'E')) {
            self.pos += 1;
            integral = false;
            if matches!(self.current(), Some('+' | '-')) {
                self.pos += 1;
            }
            if self.eat_digits() == 0 {
                return Err(FilterError::new(self.pos, "expected a digit in the number's exponent"));
            }
        }
        // `21abc` is a typo rather than the number 21 followed by a word; saying so is
        // clearer than a complaint about `abc`.
        if self.current().is_some_and(|c| is_ident_char(c) || c == '.') {
            while self.current().is_some_and(|c| is_ident_char(c) || c == '.') {
                self.pos += 1;
            }
            return Err(FilterError::new(start, format!("invalid number '{}'", self.text(start, self.pos))));
        }
        let text = self.text(start, self.pos);
        let parsed = if integral {
            text.parse::<i64>().map(Number::from).or_else(|_| text.parse::<u64>().map(Number::from)).ok()
        } else {
            None
        };
        // Integers beyond u64 fall back to f64 like JSON parsers do; only infinity fails.
        parsed
            .or_else(|| text.parse::<f64>().ok().and_then(Number::from_f64))
            .ok_or_else(|| FilterError::new(start, format!("number '{text}' is out of range")))
    }

    fn parse_or(&mut self) -> Result<Filter, FilterError> {
        let mut left = self.parse_and()?;
        while self.peek_keyword("or")? {
            self.next()?;
            let right = self.parse_and()?;
            left = Filter::Or(Box::new(left), Box::new(right));
        }
        Ok(left)
    }

    fn parse_and(&mut self) -> Result<Filter, FilterError> {
        let mut left = self.parse_unary()?;
        while self.peek_keyword("and")? {
            self.next()?;
            let right = self.parse_unary()?;
            left = Filter::And(Box::new(left), Box::new(right));
        }
        Ok(left)
    }

    fn parse_unary(&mut self) -> Result<Filter, FilterError> {
        let tok = self.next()?;
        // `not`, `and` and `or` are keywords here unless an operator follows, in which
        // case they name an attribute (`not eq "x"`). Deciding this way keeps the precise
        // errors for the common mistakes `not status eq "x"` and `a pr or or b pr`.
        let keyword = match &tok.kind {
            TokenKind::Word(w) if ["not", "and", "or"].iter().any(|k| w.eq_ignore_ascii_case(k)) => {
                if self.operator_follows()? { None } else { Some(w.to_ascii_lowercase()) }
            }
            _ => None,
        };
        match (tok.kind, keyword.as_deref()) {
            (TokenKind::LParen, _) => self.parse_group(tok.start),
            (_, Some("not")) => {
                if !self.syntax.allow_not {
                    return Err(FilterError::new(tok.start, "operator 'not' is not supported here"));
                }
                let open = self.next()?;
                if open.kind != TokenKind::LParen {
                    return Err(FilterError::new(
                        open.start,
                        format!("expected '(' after 'not', found {}", self.describe(&open)),
                    ));
                }
                Ok(Filter::Not(Box::new(self.parse_group(open.start)?)))
            }
            (TokenKind::Word(path), None) => self.parse_comparison(path, tok.start),
            (kind, _) => Err(FilterError::new(
                tok.start,
                format!("expected an attribute name, 'not' or '(', found {}", self.describe(&Token { kind, ..tok })),
            )),
        }
    }

    fn operator_follows(&mut self) -> Result<bool, FilterError> {
        Ok(matches!(&self.peek()?.kind,
            TokenKind::Word(w) if w.eq_ignore_ascii_case("pr") || Op::from_keyword(w).is_some()))
    }

    fn parse_group(&mut self, open: usize) -> Result<Filter, FilterError> {
        self.depth += 1;
        if self.depth > MAX_DEPTH {
            return Err(FilterError::new(
                open,
                format!("filter is nested too deeply (more than {MAX_DEPTH} levels of parentheses)"),
            ));
        }
        let inner = self.parse_or()?;
        let close = self.next()?;
        match close.kind {
            TokenKind::RParen => {
                self.depth -= 1;
                Ok(inner)
            }
            TokenKind::End => {
                Err(FilterError::new(close.start, format!("missing ')' to close the '(' at position {open}")))
            }
            _ => Err(FilterError::new(
                close.start,
                format!(
                    "expected 'and', 'or' or ')' to close the '(' at position {open}, found {}",
                    self.describe(&close)
                ),
            )),
        }
    }

    fn operator_list(&self) -> &'static str {
        if self.syntax.allow_contains_ends_with {
            "eq, ne, gt, ge, lt, le, sw, co, ew, pr"
        } else {
            "eq, ne, gt, ge, lt, le, sw, pr"
        }
    }

    fn parse_comparison(&mut self, path: String, start: usize) -> Result<Filter, FilterError> {
        validate_path(&path, start)?;
        let op_tok = self.next()?;
        let op = match &op_tok.kind {
            TokenKind::Word(w) if w.eq_ignore_ascii_case("pr") => {
                return Ok(Filter::Present { path });
            }
            TokenKind::Word(w) => Op::from_keyword(w),
            _ => None,
        };
        let Some(op) = op else {
            return Err(FilterError::new(
                op_tok.start,
                format!("expected an operator ({}), found {}", self.operator_list(), self.describe(&op_tok)),
            ));
        };
        if matches!(op, Op::Co | Op::Ew) && !self.syntax.allow_contains_ends_with {
            return Err(FilterError::new(op_tok.start, format!("operator '{op}' is not supported here")));
        }

        let value_tok = self.next()?;
        let value = match &value_tok.kind {
            TokenKind::Str(s) => Value::String(s.clone()),
            TokenKind::Num(n) => Value::Number(n.clone()),
            TokenKind::Word(w) if w.eq_ignore_ascii_case("true") => Value::Bool(true),
            TokenKind::Word(w) if w.eq_ignore_ascii_case("false") => Value::Bool(false),
            TokenKind::Word(w) if w.eq_ignore_ascii_case("null") => Value::Null,
            TokenKind::Word(_) => {
                return Err(FilterError::new(
                    value_tok.start,
                    format!(
                        "expected a value ({VALUE_KINDS}) after '{op}', found {}; string values must be in double quotes",
                        self.describe(&value_tok)
                    ),
                ));
            }
            _ => {
                return Err(FilterError::new(
                    value_tok.start,
                    format!("expected a value ({VALUE_KINDS}) after '{op}', found {}", self.describe(&value_tok)),
                ));
            }
        };
        // Such comparisons could only ever be false; rejecting them points the caller at
        // the mistake instead of silently returning nothing.
        let type_error = match op {
            Op::Sw | Op::Co | Op::Ew if !value.is_string() => Some("a string"),
            Op::Gt | Op::Ge | Op::Lt | Op::Le if !(value.is_string() || value.is_number()) => {
                Some("a string or number")
            }
            _ => None,
        };
        if let Some(expected) = type_error {
            return Err(FilterError::new(
                value_tok.start,
                format!("operator '{op}' needs {expected} value, found {}", self.describe(&value_tok)),
            ));
        }
        Ok(Filter::Compare { path, op, value })
    }
}

/// The lexer only guarantees the path starts with a valid character and contains
/// identifier characters and dots; each dotted segment must also be a valid name.
fn validate_path(path: &str, start: usize) -> Result<(), FilterError> {
    // Paths are ASCII (the lexer admits nothing else), so byte and char offsets agree.
    let mut segment_start = start;
    for segment in path.split('.') {
        match segment.chars().next() {
            None => {
                return Err(FilterError::new(segment_start, format!("empty name in attribute path '{path}'")));
            }
            Some(c) if !is_ident_start(c) => {
                return Err(FilterError::new(
                    segment_start,
                    format!("attribute name '{segment}' in '{path}' must start with a letter, '_' or '$'"),
                ));
            }
            Some(_) => {}
        }
        segment_start += segment.len() + 1;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn p(input: &str) -> Filter {
        match parse(input, Syntax::LOGS) {
            Ok(filter) => filter,
            Err(e) => panic!("{input:?} should parse: {e}"),
        }
    }

    fn err_with(input: &str, syntax: Syntax) -> FilterError {
        match parse(input, syntax) {
            Ok(filter) => panic!("{input:?} should be rejected, got {filter:?}"),
            Err(e) => e,
        }
    }

    fn err(input: &str) -> FilterError {
        err_with(input, Syntax::LOGS)
    }

    fn m(input: &str, doc: &Value) -> bool {
        p(input).matches(doc)
    }

    fn cmp(path: &str, op: Op, value: Value) -> Filter {
        Filter::Compare { path: path.to_owned(), op, value }
    }

    fn user() -> Value {
        json!({
            "id": "00u1",
            "status": "ACTIVE",
            "lastUpdated": "2013-07-02T21:36:25.344Z",
            "created": "2013-06-01T00:00:00.000Z",
            "profile": {
                "firstName": "Isaac",
                "lastName": "Brock",
                "department": "Engineering",
                "age": 30,
                "score": 1.5,
                "verified": true,
                "nickName": "",
                "title": null,
                "emails": ["isaac@example.com", "ib@example.org"],
                "tags": [],
                "unicode": "ÉCOLE Straße"
            }
        })
    }

    fn log_event() -> Value {
        json!({
            "uuid": "dc9fd3c0-598c-11ef-8478-2b7584bf8d5a",
            "published": "2024-08-13T15:58:20.353Z",
            "eventType": "user.session.start",
            "outcome": { "result": "FAILURE", "reason": "INVALID_CREDENTIALS" },
            "actor": { "id": "00u2", "type": "User" },
            "target": [
                { "id": "00u1", "type": "User" },
                { "id": "0oa1", "type": "AppInstance" }
            ],
            "debugContext": { "debugData": { "requestId": "req-42" } },
            "transaction": { "type": "WEB", "detail": { "requestApiTokenId": "00T1" } }
        })
    }

    #[test]
    fn brief_examples_parse_and_evaluate() {
        let user = user();
        let event = log_event();
        assert!(m(r#"status eq "ACTIVE""#, &user));
        assert!(m(r#"lastUpdated gt "2013-06-01T00:00:00.000Z""#, &user));
        assert!(m(r#"status eq "ACTIVE" or status eq "STAGED""#, &user));
        assert!(m(r#"(status eq "LOCKED_OUT" or status eq "ACTIVE") and profile.department eq "Engineering""#, &user));
        assert!(!m(
            r#"(status eq "LOCKED_OUT" or status eq "RECOVERY") and profile.department eq "Engineering""#,
            &user
        ));
        assert!(m("profile.age ge 21", &user));
        assert!(m(r#"eventType eq "user.session.start" and outcome.result eq "FAILURE""#, &event));
        assert!(!m(r#"eventType sw "event_hook""#, &event));
        assert!(m(r#"eventType co "session""#, &event));
        assert!(!m(r#"eventType ew "token""#, &event));
        assert!(m(r#"eventType ew "START""#, &event));
        assert!(m(r#"actor.id ne "00u1""#, &event));
        assert!(m(r#"transaction.detail.requestApiTokenId eq "00T1""#, &event));
        assert!(m(r#"debugContext.debugData.requestId eq "req-42""#, &event));
        assert!(!m("profile.nickName pr", &user));
        assert!(m("profile.firstName pr", &user));
        assert!(!m(r#"not (status eq "ACTIVE")"#, &user));
        assert!(m(r#"not(status eq "STAGED")"#, &user));
    }

    #[test]
    fn parses_into_expected_tree() {
        assert_eq!(p(r#"profile.lastName eq "Brock""#), cmp("profile.lastName", Op::Eq, json!("Brock")));
        assert_eq!(p("a pr"), Filter::Present { path: "a".to_owned() });
        assert_eq!(p("x eq -12"), cmp("x", Op::Eq, json!(-12)));
        assert_eq!(p("x eq 1.25"), cmp("x", Op::Eq, json!(1.25)));
        assert_eq!(p("x eq 2e3"), cmp("x", Op::Eq, json!(2000.0)));
        assert_eq!(p("x eq true"), cmp("x", Op::Eq, json!(true)));
        assert_eq!(p("x eq FALSE"), cmp("x", Op::Eq, json!(false)));
        assert_eq!(p("x eq null"), cmp("x", Op::Eq, Value::Null));
        assert_eq!(p("x eq 18446744073709551615"), cmp("x", Op::Eq, json!(u64::MAX)));
        assert_eq!(p(r#"x eq "a\"b\\c\/d\n\t\u00e9\ud83e\udd80""#), cmp("x", Op::Eq, json!("a\"b\\c/d\n\té🦀")));
        assert_eq!(p(r#"x eq "名前 🦀""#), cmp("x", Op::Eq, json!("名前 🦀")));
        assert_eq!(p("$ref.a_b-c.d9 pr"), Filter::Present { path: "$ref.a_b-c.d9".to_owned() });
    }

    #[test]
    fn whitespace_is_flexible() {
        let expected = p(r#"a eq "x" and b pr"#);
        assert_eq!(p(" \t\na   eq\n\"x\"\tand\r\n b  pr \n"), expected);
        assert_eq!(p(r#"a eq"x"and b pr"#), expected);
        assert_eq!(p(r#"(a eq "x")and(b pr)"#), expected);
    }

    #[test]
    fn keywords_are_case_insensitive_but_names_are_not() {
        let user = user();
        assert!(m(r#"status EQ "ACTIVE""#, &user));
        assert!(m(r#"status Eq "ACTIVE" And profile.age GE 21"#, &user));
        assert!(m(r#"status eq "X" OR status eq "ACTIVE""#, &user));
        assert!(m(r#"NOT (status eq "X")"#, &user));
        assert!(m("profile.firstName PR", &user));
        assert!(!m(r#"STATUS eq "ACTIVE""#, &user));
        assert!(!m(r#"status eq "active""#, &user));
    }

    #[test]
    fn every_operator() {
        let user = user();
        let cases: &[(&str, bool)] = &[
            (r#"status eq "ACTIVE""#, true),
            (r#"status eq "STAGED""#, false),
            (r#"status ne "STAGED""#, true),
            (r#"status ne "ACTIVE""#, false),
            ("profile.age gt 29", true),
            ("profile.age gt 30", false),
            ("profile.age ge 30", true),
            ("profile.age ge 31", false),
            ("profile.age lt 31", true),
            ("profile.age lt 30", false),
            ("profile.age le 30", true),
            ("profile.age le 29.5", false),
            ("profile.score gt 1", true),
            ("profile.score lt 2", true),
            ("profile.score eq 1.5", true),
            (r#"profile.lastName sw "br""#, true),
            (r#"profile.lastName sw "ock""#, false),
            (r#"profile.lastName co "ROC""#, true),
            (r#"profile.lastName co "x""#, false),
            (r#"profile.lastName ew "OCK""#, true),
            (r#"profile.lastName ew "bro""#, false),
            (r#"profile.unicode sw "école""#, true),
            (r#"profile.unicode ew "STRASSE""#, false),
            (r#"profile.unicode ew "straße""#, true),
            ("profile.firstName pr", true),
            ("profile.missing pr", false),
            ("profile.title pr", false),
            ("profile.tags pr", false),
            ("profile.emails pr", true),
            ("profile pr", true),
        ];
        for (input, expected) in cases {
            assert_eq!(m(input, &user), *expected, "{input}");
        }
    }

    #[test]
    fn value_types() {
        let user = user();
        // Numeric equality ignores representation.
        assert!(m("profile.age eq 30.0", &user));
        assert!(m("profile.age eq 3e1", &user));
        assert!(m("profile.score eq 1.50", &user));
        assert!(m("n eq 18446744073709551615", &json!({ "n": 18446744073709551615u64 })));
        assert!(m("n lt 0", &json!({ "n": -9223372036854775808i64 })));
        assert!(m("n gt -1", &json!({ "n": 18446744073709551615u64 })));
        // Mixed types never match, and numbers are not compared with strings.
        assert!(!m("status eq 1", &user));
        assert!(!m(r#"profile.age eq "30""#, &user));
        assert!(!m(r#"profile.age gt "1""#, &user));
        assert!(!m("status gt 1", &user));
        assert!(!m(r#"profile.age sw "3""#, &user));
        // Booleans and null use JSON equality.
        assert!(m("profile.verified eq true", &user));
        assert!(!m("profile.verified eq false", &user));
        assert!(m("profile.verified ne false", &user));
        assert!(m("profile.title eq null", &user));
        assert!(!m("profile.firstName eq null", &user));
        assert!(!m("profile.verified eq 1", &user));
    }

    #[test]
    fn missing_attributes() {
        let user = user();
        assert!(!m(r#"profile.missing eq "x""#, &user));
        assert!(m(r#"profile.missing ne "x""#, &user));
        assert!(!m("profile.missing eq null", &user));
        assert!(m("profile.missing ne null", &user));
        assert!(!m("profile.missing gt 1", &user));
        assert!(!m(r#"profile.missing co "x""#, &user));
        // Walking through a scalar reaches nothing.
        assert!(!m(r#"status.inner eq "x""#, &user));
        assert!(m(r#"status.inner ne "x""#, &user));
        assert!(!m("status pr", &json!("not an object")));
    }

    #[test]
    fn arrays_match_any_element() {
        let event = log_event();
        assert!(m(r#"target.id eq "00u1""#, &event));
        assert!(m(r#"target.id eq "0oa1""#, &event));
        assert!(!m(r#"target.id eq "00u9""#, &event));
        assert!(m(r#"target.type eq "AppInstance""#, &event));
        assert!(m(r#"target.id sw "0OA""#, &event));
        assert!(m("target.id pr", &event));
        // `ne` is `not eq`, so it is false when any element matches.
        assert!(!m(r#"target.id ne "00u1""#, &event));
        assert!(m(r#"target.id ne "00u9""#, &event));
        // A final array value is searched too.
        let user = user();
        assert!(m(r#"profile.emails eq "ib@example.org""#, &user));
        assert!(m(r#"profile.emails ew "example.com""#, &user));
        assert!(!m(r#"profile.tags eq "x""#, &user));
        // Arrays nested inside arrays, and a document that is itself an array.
        let nested = json!({ "a": [[{ "b": 1 }], [{ "b": [2, 3] }]] });
        assert!(m("a.b eq 3", &nested));
        assert!(!m("a.b eq 4", &nested));
        assert!(m("a eq 1", &json!([{ "a": 0 }, { "a": 1 }])));
        // Element-wise semantics: each comparison picks its own element.
        assert!(m(r#"target.id eq "00u1" and target.type eq "AppInstance""#, &event));
    }

    #[test]
    fn deeply_nested_arrays_do_not_recurse_forever() {
        let mut doc = json!("x");
        for _ in 0..200 {
            doc = Value::Array(vec![doc]);
        }
        let doc = json!({ "a": doc });
        assert!(!m(r#"a eq "x""#, &doc));
        let mut shallow = json!("x");
        for _ in 0..5 {
            shallow = Value::Array(vec![shallow]);
        }
        assert!(m(r#"a eq "x""#, &json!({ "a": shallow })));
    }

    #[test]
    fn timestamps_compare_as_instants() {
        let user = user();
        assert!(m(r#"lastUpdated gt "2013-06-01T00:00:00Z""#, &user));
        assert!(m(r#"lastUpdated gt "2013-06-01T00:00:00.000Z""#, &user));
        assert!(m(r#"lastUpdated lt "2014-01-01T00:00:00Z""#, &user));
        // Lexicographically "…00.000Z" < "…00Z", yet the instants are equal.
        assert!(m(r#"created ge "2013-06-01T00:00:00Z""#, &user));
        assert!(m(r#"created le "2013-06-01T00:00:00Z""#, &user));
        assert!(!m(r#"created gt "2013-06-01T00:00:00Z""#, &user));
        assert!(!m(r#"created lt "2013-06-01T00:00:00Z""#, &user));
        // Offsets are honoured: 02:00+02:00 is midnight UTC.
        assert!(m(r#"created ge "2013-06-01T02:00:00+02:00""#, &user));
        assert!(!m(r#"created gt "2013-06-01T02:00:00+02:00""#, &user));
        assert!(m(r#"created gt "2013-06-01T01:59:59.999+02:00""#, &user));
        // Equality stays exact string comparison.
        assert!(!m(r#"created eq "2013-06-01T00:00:00Z""#, &user));
        // Non-timestamps compare lexicographically.
        assert!(m(r#"status gt "ABC""#, &user));
        assert!(m(r#"status lt "B""#, &user));
        assert!(m(r#"status ge "ACTIVE""#, &user));
        assert!(!m(r#"created gt "not a date""#, &user));
    }

    #[test]
    fn precedence_and_grouping() {
        let a = || cmp("a", Op::Eq, json!(1));
        let b = || cmp("b", Op::Eq, json!(2));
        let c = || cmp("c", Op::Eq, json!(3));
        let and = |l, r| Filter::And(Box::new(l), Box::new(r));
        let or = |l, r| Filter::Or(Box::new(l), Box::new(r));
        assert_eq!(p("a eq 1 or b eq 2 and c eq 3"), or(a(), and(b(), c())));
        assert_eq!(p("a eq 1 and b eq 2 or c eq 3"), or(and(a(), b()), c()));
        assert_eq!(p("(a eq 1 or b eq 2) and c eq 3"), and(or(a(), b()), c()));
        assert_eq!(p("a eq 1 or b eq 2 or c eq 3"), or(or(a(), b()), c()));
        assert_eq!(p("a eq 1 and (b eq 2 and c eq 3)"), and(a(), and(b(), c())));
        assert_eq!(p("((a eq 1))"), a());
        assert_eq!(p("not (a eq 1) and b eq 2"), and(Filter::Not(Box::new(a())), b()));
        assert_eq!(p("not (not (a eq 1))"), Filter::Not(Box::new(Filter::Not(Box::new(a())))));

        let doc = json!({ "a": 1, "b": 0, "c": 0 });
        assert!(m("a eq 1 or b eq 2 and c eq 3", &doc));
        assert!(!m("(a eq 1 or b eq 2) and c eq 3", &doc));
        assert!(m("not (b eq 2) and a eq 1", &doc));
        assert!(!m("not (a eq 1 or b eq 2)", &doc));
    }

    #[test]
    fn not_as_attribute_name() {
        assert_eq!(p(r#"not eq "x""#), cmp("not", Op::Eq, json!("x")));
        assert_eq!(p("not pr"), Filter::Present { path: "not".to_owned() });
        assert_eq!(p("and eq 1 and or eq 2").conjuncts().len(), 2);
    }

    #[test]
    fn conjuncts_flatten_top_level_and() {
        let f = p("a eq 1 and (b eq 2 and c pr) and (d eq 1 or e eq 2) and not (f pr)");
        let terms: Vec<String> = f.conjuncts().iter().map(|t| t.to_string()).collect();
        assert_eq!(terms, ["a eq 1", "b eq 2", "c pr", "d eq 1 or e eq 2", "not (f pr)"]);
        let single = p("a eq 1 or b eq 2");
        assert_eq!(single.conjuncts(), vec![&single]);
    }

    #[test]
    fn paths_lists_each_attribute_once() {
        let f = p(r#"profile.a eq 1 or (status pr and not (profile.a eq 2 or target.id sw "x")) and status eq "A""#);
        assert_eq!(f.paths(), ["profile.a", "status", "target.id"]);
    }

    #[test]
    fn display_round_trips() {
        for input in [
            r#"status eq "ACTIVE""#,
            "a eq 1 or b eq 2 and c eq 3",
            "(a eq 1 or b eq 2) and c eq 3",
            "a eq 1 or (b eq 2 or c eq 3)",
            "a eq 1 and (b eq 2 and c eq 3)",
            r#"not (a pr) and x co "q\"\\\u0001é""#,
            "x ge -1.5e-7 and y le 18446744073709551615 and z eq null",
        ] {
            let f = p(input);
            assert_eq!(p(&f.to_string()), f, "{input} -> {f}");
        }
        assert_eq!(p("(a eq 1 OR b eq 2) AND c eq 3").to_string(), "(a eq 1 or b eq 2) and c eq 3");
    }

    #[test]
    fn errors_name_their_position() {
        let cases: &[(&str, usize, &str)] = &[
            ("", 0, "empty filter"),
            (" \t\n", 0, "empty filter"),
            (r#"status eq "ACTIVE"#, 10, "unterminated string"),
            (r#"status eq "ACTIVE\"#, 10, "unterminated string"),
            (r#"status eq "AC\qTIVE""#, 13, "invalid escape '\\q'"),
            (r#"status eq "\u12""#, 11, "invalid unicode escape"),
            (r#"status eq "\uZZZZ""#, 11, "invalid unicode escape"),
            (r#"status eq "ab\ud800""#, 13, "high surrogate"),
            (r#"status eq "\ud800\u0041""#, 11, "high surrogate"),
            (r#"status eq "\udc00""#, 11, "low surrogate"),
            (
                r#"profile.state equals "x""#,
                14,
                "expected an operator (eq, ne, gt, ge, lt, le, sw, co, ew, pr), found 'equals'",
            ),
            (r#"status = "x""#, 7, "expected an operator"),
            ("status", 6, "found end of input"),
            (r#"status "x""#, 7, "found '\"x\"'"),
            ("status eq", 9, "expected a value"),
            ("status eq   ", 12, "found end of input"),
            ("status eq )", 10, "expected a value"),
            ("status eq ACTIVE", 10, "string values must be in double quotes"),
            ("a eq -", 6, "expected a digit after '-'"),
            ("a eq -x", 6, "expected a digit after '-'"),
            ("a eq 1.", 7, "decimal point"),
            ("a eq 1e", 7, "exponent"),
            ("a eq 21abc", 5, "invalid number '21abc'"),
            ("a eq 1e999", 5, "out of range"),
            (r#"(status eq "A""#, 14, "missing ')' to close the '(' at position 0"),
            (r#"(a pr or (b pr)"#, 15, "missing ')'"),
            (r#"(a pr b pr)"#, 6, "expected 'and', 'or' or ')'"),
            (r#"status eq "A")"#, 13, "unexpected ')'"),
            (r#"status eq "A" foo"#, 14, "expected 'and', 'or' or end of input, found 'foo'"),
            ("a pr and", 8, "expected an attribute name"),
            ("a pr or or b pr", 8, "found 'or'"),
            ("()", 1, "found ')'"),
            (r#""x" eq status"#, 0, "expected an attribute name"),
            ("1 eq 1", 0, "expected an attribute name"),
            ("名前 eq 1", 0, "found '名'"),
            (r#"not status eq "x""#, 4, "expected '(' after 'not'"),
            ("not", 3, "expected '(' after 'not', found end of input"),
            ("a..b pr", 2, "empty name"),
            ("a. pr", 2, "empty name"),
            ("a.1b pr", 2, "must start with a letter"),
            ("a.-b pr", 2, "must start with a letter"),
            (r#"eventType sw 5"#, 13, "operator 'sw' needs a string value"),
            ("a gt true", 5, "needs a string or number value"),
            ("a lt null", 5, "needs a string or number value"),
        ];
        for (input, position, fragment) in cases {
            let e = err(input);
            assert_eq!(e.position, *position, "{input:?}: {e}");
            assert!(e.message.contains(fragment), "{input:?}: {e}");
        }
    }

    #[test]
    fn error_display_format() {
        assert_eq!(
            err(r#"profile.state equals "x""#).to_string(),
            "at position 14: expected an operator (eq, ne, gt, ge, lt, le, sw, co, ew, pr), found 'equals'"
        );
        let e = err(&format!("a eq \"x\" \"{}\"", "y".repeat(100)));
        assert!(e.message.ends_with("...'"), "{e}");
    }

    #[test]
    fn positions_count_characters_not_bytes() {
        let e = err(r#"status eq "é" foo"#);
        assert_eq!(e.position, 14);
        let e = err(r#"a eq "🦀🦀" and b eq "\x""#);
        assert_eq!(e.position, 20);
        let e = err(r#"a eq "日本" b"#);
        assert_eq!(e.position, 10);
    }

    #[test]
    fn disallowed_syntax() {
        let e = err_with(r#"eventType co "session""#, Syntax::USERS);
        assert_eq!(e.position, 10);
        assert_eq!(e.message, "operator 'co' is not supported here");
        let e = err_with(r#"a pr and eventType EW "x""#, Syntax::USERS);
        assert_eq!((e.position, e.message.as_str()), (19, "operator 'ew' is not supported here"));
        let e = err_with(r#"status eqq "x""#, Syntax::USERS);
        assert_eq!(e.message, "expected an operator (eq, ne, gt, ge, lt, le, sw, pr), found 'eqq'");
        assert!(parse(r#"status sw "A""#, Syntax::USERS).is_ok());

        let no_not = Syntax { allow_contains_ends_with: true, allow_not: false };
        let e = err_with(r#"a pr and not (b pr)"#, no_not);
        assert_eq!((e.position, e.message.as_str()), (9, "operator 'not' is not supported here"));
        assert!(parse(r#"a pr and (b co "x")"#, no_not).is_ok());
    }

    #[test]
    fn depth_limit() {
        let nested = |n: usize| format!("{}a pr{}", "(".repeat(n), ")".repeat(n));
        assert!(parse(&nested(MAX_DEPTH), Syntax::LOGS).is_ok());
        let e = err(&nested(MAX_DEPTH + 1));
        assert_eq!(e.position, MAX_DEPTH);
        assert!(e.message.contains("nested too deeply"), "{e}");

        let nots = |n: usize| format!("{}a pr{}", "not (".repeat(n), ")".repeat(n));
        assert!(parse(&nots(MAX_DEPTH), Syntax::LOGS).is_ok());
        let e = err(&nots(MAX_DEPTH + 1));
        assert_eq!(e.position, MAX_DEPTH * 5 + 4);

        // Unbalanced hostile input fails on depth, not on the stack.
        assert!(err(&"(".repeat(MAX_FILTER_LEN)).message.contains("nested too deeply"));
        assert!(err(&"not(".repeat(1000)).message.contains("nested too deeply"));
    }

    #[test]
    fn length_limit() {
        // 455 terms fill 4090 bytes: about the longest chain the limit allows.
        let longest = vec!["a pr"; 455].join(" and ");
        assert!(longest.len() <= MAX_FILTER_LEN);
        let f = p(&longest);
        assert_eq!(f.conjuncts().len(), 455);
        assert!(f.matches(&json!({ "a": 1 })));
        assert_eq!(p(&f.to_string()), f);

        let e = err(&format!("{} and b pr", longest));
        assert_eq!(e.position, MAX_FILTER_LEN);
        assert!(e.message.contains("too long"), "{e}");

        // Multi-byte input: the position is a character offset.
        let wide = format!("a eq \"{}\"", "é".repeat(3000));
        let e = err(&wide);
        assert_eq!(e.position, 6 + (MAX_FILTER_LEN - 6) / 2);
    }

    struct XorShift(u64);

    impl XorShift {
        fn next(&mut self) -> u64 {
            let mut x = self.0;
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            self.0 = x;
            x
        }

        fn below(&mut self, n: usize) -> usize {
            (self.next() % n as u64) as usize
        }

        fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
            &items[self.below(items.len())]
        }
    }

    /// Parses under both syntaxes; accepted filters must evaluate, render and re-parse
    /// to the same tree, rejected ones must point inside (or just past) the input.
    fn check_no_panic(input: &str, docs: &[Value]) {
        let chars = input.chars().count();
        for syntax in [Syntax::LOGS, Syntax::USERS] {
            match parse(input, syntax) {
                Ok(filter) => {
                    let negated = Filter::Not(Box::new(filter.clone()));
                    for doc in docs {
                        assert_ne!(filter.matches(doc), negated.matches(doc), "{input:?}");
                    }
                    let _ = filter.conjuncts();
                    let _ = filter.paths();
                    let rendered = filter.to_string();
                    if rendered.len() <= MAX_FILTER_LEN {
                        assert_eq!(parse(&rendered, syntax).as_ref(), Ok(&filter), "{input:?}");
                    }
                }
                Err(e) => {
                    assert!(e.position <= chars, "{input:?}: {e}");
                    assert!(!e.message.is_empty());
                }
            }
        }
    }

    #[test]
    fn random_and_mutated_input_never_panics() {
        let seeds = [
            r#"status eq "ACTIVE""#,
            r#"lastUpdated gt "2013-06-01T00:00:00.000Z""#,
            r#"(status eq "LOCKED_OUT" or status eq "RECOVERY") and profile.department eq "Engineering""#,
            "profile.age ge 21",
            r#"eventType eq "user.session.start" and outcome.result eq "FAILURE""#,
            r#"eventType co "session" or target.id ew "u1""#,
            r#"not (actor.id ne "00u1") and profile.nickName pr"#,
            r#"x eq "\u00e9\ud83e\udd80\n" or y le -1.5e3 and z eq null"#,
            r#"a eq "日本語🦀" and b sw "É""#,
        ];
        let fragments = [
            "status",
            "eq",
            " EQ ",
            " and ",
            " OR ",
            "not",
            "not(",
            "(",
            ")",
            " pr",
            "\"",
            "\"x\"",
            "\\",
            "\\u",
            "\\ud83d",
            "d800",
            "-",
            "1.5",
            "e",
            "1e999",
            "0",
            ".",
            " ",
            "\t",
            "\n",
            "true",
            "null",
            "co",
            "ew",
            "sw",
            "$",
            "_",
            "é",
            "漢",
            "🦀",
            "\u{0}",
            "\u{a0}",
            "'",
            "=",
            "profile.",
            "target.id",
            "gt",
            "\"2013-06-01T00:00:00Z\"",
        ];
        let chars: Vec<char> = "()\"\\.-_$ 0123456789aeEnotrqu\t\né漢🦀\u{0}\u{ffff}\u{10ffff}".chars().collect();
        let docs = [user(), log_event(), json!(null), json!([1, "a", { "a": [] }])];

        let mut rng = XorShift(0x9E37_79B9_7F4A_7C15);
        for round in 0..2000 {
            let input: String = if round % 2 == 0 {
                let count = 1 + rng.below(12);
                (0..count).map(|_| *rng.pick(&fragments)).collect()
            } else {
                let mut text: Vec<char> = rng.pick(&seeds).chars().collect();
                for _ in 0..1 + rng.below(4) {
                    let at = rng.below(text.len() + 1);
                    match rng.below(5) {
                        0 if at < text.len() => {
                            text.remove(at);
                        }
                        1 => text.insert(at, *rng.pick(&chars)),
                        2 if at < text.len() => text[at] = *rng.pick(&chars),
                        3 => text.truncate(at),
                        _ => {
                            let end = (at + rng.below(8)).min(text.len());
                            let copy: Vec<char> = text[at..end].to_vec();
                            let to = rng.below(text.len() + 1);
                            text.splice(to..to, copy);
                        }
                    }
                }
                text.into_iter().collect()
            };
            check_no_panic(&input, &docs);
        }
    }
}
