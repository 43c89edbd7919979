//! Event hook filter expressions: the subset of the Okta Expression Language (itself a subset
//! of the Spring Expression Language, SpEL) that Okta documents for
//! `events.filter.eventFilterMap[].condition.expression`.
//!
//! An expression is parsed once, when the hook is created or updated, with
//! [`Expression::parse`]; every mistake is reported with its character position so that the
//! API can reject the hook with a useful 400. Each System Log event (the `LogEvent` JSON) is
//! then tested with [`Expression::matches`].
//!
//! Grammar (keywords and `true`/`false`/`null` are case-insensitive; property and method
//! names are case-sensitive):
//!
//! ```text
//! expr    = and *( ("||" / "or") and )
//! and     = cmp *( ("&&" / "and") cmp )
//! cmp     = unary [ op unary ]        ; op: eq ne gt ge lt le == != > >= < <=
//! unary   = ("!" / "not") unary / postfix
//! postfix = atom *( ("." / "?.") member / "[" expr "]" )
//! member  = name / method "(" [ expr *( "," expr ) ] ")" / ("?[" / "^[" / "$[") expr "]"
//! atom    = "(" expr ")" / literal / "event" / "#this" / name   ; bare names: in selections only
//! literal = 'text' / "text" / number / "true" / "false" / "null"   ; '' inside '...' is a quote
//! ```
//!
//! Evaluation follows SpEL where it matters for filters:
//!
//! - `event.debugData.X` reads `debugContext.debugData.X`, because Okta's documented paths skip
//!   `debugContext`; the full path works too.
//! - A missing property is `null`; reading a property of `null` (or of a non-object) is a
//!   runtime error, and so is calling a method on `null` unless `?.` is used.
//! - `coll.?[p]` keeps the array elements for which `p` holds (`.^[p]` the first one, `.$[p]`
//!   the last one, or `null`). Inside `p`, bare names are properties of the element and
//!   `#this` is the element itself; `event` always means the whole event.
//! - `eq`/`ne` never fail: numbers compare numerically (`1 eq 1.0`), strings exactly, values of
//!   different kinds are unequal and `x eq null` holds for missing values. Ordering needs two
//!   numbers or two strings (compared like Java's `String.compareTo`).
//! - Methods: `size()` (array, string in characters, or object), `isEmpty()`, `contains(x)`
//!   (substring of a string, case-sensitive, or element of an array), `startsWith(x)`,
//!   `endsWith(x)`, `toLowerCase()`, `toUpperCase()`. `[i]` indexes an array, `['key']` an
//!   object.
//! - Any runtime error makes the whole expression false, as an exception does in SpEL, so an
//!   event is never delivered because of a failed test. `||` and `&&` short-circuit.
//!
//! Mistakes that can be seen without an event are rejected by [`Expression::parse`]: unknown
//! methods, a condition that cannot be a boolean (a literal, a bare path, a selection without
//! `.size()`), and ordering something that can never be ordered (`event.target.?[...] > 0`).
//!
//! Both parsing and evaluation are bounded: input length ([`MAX_EXPRESSION_LEN`]), nesting
//! ([`MAX_DEPTH`]) and the work done per event (a fixed budget, after which the event does
//! not match) are all capped.

use std::borrow::Cow;
use std::cmp::Ordering;
use std::fmt;
use std::str::FromStr;

use serde_json::{Map, Number, Value};

/// Longest expression accepted, in bytes. Okta's documented filters are under 200 bytes; the
/// cap bounds parse time and the size of the tree built from untrusted input.
pub const MAX_EXPRESSION_LEN: usize = 4096;

/// Deepest nesting accepted, counting every parenthesis, bracket, argument list and `!`. The
/// parser and the evaluator recurse only through these, so this also bounds their stack use.
pub const MAX_DEPTH: usize = 64;

/// Units of work one evaluation may spend. Documented filters need well under a hundred; the
/// budget only matters for hostile expressions such as nested selections over the same array,
/// whose cost would otherwise grow as the array length to the power of the nesting depth.
const EVAL_BUDGET: usize = 100_000;

/// A parsed event hook filter expression.
#[derive(Debug, Clone, PartialEq)]
pub struct Expression {
    source: String,
    root: Node,
}

/// Why an expression was rejected.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExprError {
    /// 0-based character (not byte) offset into the input.
    pub position: usize,
    pub message: String,
}

impl ExprError {
    fn new(position: usize, message: impl Into<String>) -> Self {
        ExprError { position, message: message.into() }
    }
}

impl fmt::Display for ExprError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "at position {}: {}", self.position, self.message)
    }
}

impl std::error::Error for ExprError {}

impl Expression {
    /// Parses a filter expression.
    ///
    /// # Errors
    ///
    /// Returns an [`ExprError`] with the character position of the first problem: empty or
    /// over-long input, an unterminated string, an unknown operator, method or variable, a
    /// missing operand, an unclosed `(` or `[`, a path that does not start with `event`,
    /// trailing input, nesting deeper than [`MAX_DEPTH`], or an expression (or operand of
    /// `&&`, `||`, `!` or a selection) that cannot be a boolean, such as a bare path.
    pub fn parse(input: &str) -> Result<Expression, ExprError> {
        if input.len() > MAX_EXPRESSION_LEN {
            // Point at the first character that does not fit, counted in characters like
            // every other position.
            let position = input.char_indices().take_while(|(byte, _)| *byte < MAX_EXPRESSION_LEN).count();
            return Err(ExprError::new(
                position,
                format!("expression is too long ({} bytes; at most {MAX_EXPRESSION_LEN} are allowed)", input.len()),
            ));
        }
        if input.chars().all(char::is_whitespace) {
            return Err(ExprError::new(0, "empty expression"));
        }
        let mut parser = Parser::new(input);
        let start = parser.peek()?.start;
        let root = parser.parse_or()?;
        let tok = parser.next()?;
        if tok.kind != Tok::End {
            return Err(parser.after_operand(&tok, None));
        }
        check_boolean(&root, start, "the expression", None)?;
        Ok(Expression { source: input.to_owned(), root })
    }

    /// True when the expression holds for this LogEvent; any runtime error (null dereference,
    /// type mismatch, non-boolean result, exhausted work budget) is false.
    #[must_use]
    pub fn matches(&self, event: &Value) -> bool {
        let mut evaluator = Evaluator { root: event, budget: EVAL_BUDGET };
        matches!(evaluator.eval(&self.root, None), Ok(Val::Bool(true)))
    }

    /// The source text as given.
    #[must_use]
    pub fn source(&self) -> &str {
        &self.source
    }
}

impl fmt::Display for Expression {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.source)
    }
}

impl FromStr for Expression {
    type Err = ExprError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Expression::parse(s)
    }
}

// ---------------------------------------------------------------------------
// Syntax tree
// ---------------------------------------------------------------------------

/// Chains (`a && b && c`, `event.a.b.c`) are kept flat in vectors so that the tree is only as
/// deep as the counted nesting, which keeps evaluation and drop recursion within [`MAX_DEPTH`].
#[derive(Debug, Clone, PartialEq)]
enum Node {
    Literal(Value),
    /// `event`: the LogEvent being tested.
    Event,
    /// `#this`, or the implicit receiver of a bare name: the current selection element.
    This,
    Path {
        base: Box<Node>,
        steps: Vec<Step>,
    },
    Not(Box<Node>),
    And(Vec<Node>),
    Or(Vec<Node>),
    Compare(Box<Node>, CmpOp, Box<Node>),
}

#[derive(Debug, Clone, PartialEq)]
enum Step {
    /// `safe` is SpEL's `?.`: a null receiver yields null instead of failing.
    Property {
        name: String,
        safe: bool,
    },
    Index(Box<Node>),
    Select {
        kind: SelectKind,
        pred: Box<Node>,
        safe: bool,
    },
    Call {
        method: Method,
        args: Vec<Node>,
        safe: bool,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum SelectKind {
    /// `.?[...]`
    All,
    /// `.^[...]`
    First,
    /// `.$[...]`
    Last,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum CmpOp {
    Eq,
    Ne,
    Gt,
    Ge,
    Lt,
    Le,
}

impl CmpOp {
    fn from_word(word: &str) -> Option<CmpOp> {
        [
            ("eq", CmpOp::Eq),
            ("ne", CmpOp::Ne),
            ("gt", CmpOp::Gt),
            ("ge", CmpOp::Ge),
            ("lt", CmpOp::Lt),
            ("le", CmpOp::Le),
        ]
        .into_iter()
        .find_map(|(w, op)| word.eq_ignore_ascii_case(w).then_some(op))
    }

    fn holds(self, ordering: Ordering) -> bool {
        match self {
            CmpOp::Eq => ordering.is_eq(),
            CmpOp::Ne => ordering.is_ne(),
            CmpOp::Gt => ordering.is_gt(),
            CmpOp::Ge => ordering.is_ge(),
            CmpOp::Lt => ordering.is_lt(),
            CmpOp::Le => ordering.is_le(),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Method {
    Size,
    IsEmpty,
    Contains,
    StartsWith,
    EndsWith,
    ToLowerCase,
    ToUpperCase,
}

impl Method {
    const ALL: [(&'static str, Method, usize); 7] = [
        ("size", Method::Size, 0),
        ("isEmpty", Method::IsEmpty, 0),
        ("contains", Method::Contains, 1),
        ("startsWith", Method::StartsWith, 1),
        ("endsWith", Method::EndsWith, 1),
        ("toLowerCase", Method::ToLowerCase, 0),
        ("toUpperCase", Method::ToUpperCase, 0),
    ];
    const LIST: &'static str =
        "size(), isEmpty(), contains(x), startsWith(x), endsWith(x), toLowerCase() and toUpperCase()";

    fn lookup(name: &str) -> Option<(Method, usize)> {
        Method::ALL.into_iter().find_map(|(n, method, arity)| (n == name).then_some((method, arity)))
    }

    /// What the method returns when that is not a boolean, for the static boolean check.
    fn non_boolean(self) -> Option<&'static str> {
        match self {
            Method::Size => Some("a number (size() counts elements; compare it, as in 'size() > 0')"),
            Method::ToLowerCase | Method::ToUpperCase => Some("a string; compare it with a value"),
            Method::IsEmpty | Method::Contains | Method::StartsWith | Method::EndsWith => None,
        }
    }
}

/// Rejects, at parse time, a condition that can only ever evaluate to a non-boolean. Such a
/// filter could never match, so failing when the hook is saved shows the mistake instead of
/// silently dropping every event. A bare path is rejected even though the property could hold a boolean, so that the
/// common slip of forgetting the comparison is caught; `... eq true` says the same thing.
fn check_boolean(node: &Node, start: usize, role: &str, hint: Option<&str>) -> Result<(), ExprError> {
    let what = match node {
        Node::Literal(Value::Bool(_)) | Node::This | Node::Not(_) | Node::And(_) | Node::Or(_) | Node::Compare(..) => {
            return Ok(());
        }
        Node::Literal(Value::String(_)) => "a string",
        Node::Literal(Value::Null) => "null",
        Node::Literal(_) => "a number",
        Node::Event => "the whole event",
        Node::Path { steps, .. } => match steps.last() {
            None => return Ok(()),
            Some(Step::Property { .. } | Step::Index(_)) => {
                "a property value; compare it with a value (as in \"... eq 'x'\" or \"... eq true\")"
            }
            Some(Step::Select { kind: SelectKind::All, .. }) => {
                "a selection, which is a list; test it with '.size() > 0'"
            }
            Some(Step::Select { .. }) => "a selected element; compare it with a value or test its properties",
            Some(Step::Call { method, .. }) => match method.non_boolean() {
                Some(what) => what,
                None => return Ok(()),
            },
        },
    };
    let hint = hint.map(|h| format!(" ({h})")).unwrap_or_default();
    Err(ExprError::new(start, format!("{role} must be a boolean condition, but this is {what}{hint}")))
}

/// Describes an operand that can never be ordered (it is neither a number nor a string), so
/// that `event.target.?[...] > 0`, which could only ever fail, is rejected at parse time.
fn unordered(node: &Node) -> Option<&'static str> {
    match node {
        Node::Literal(Value::Bool(_)) | Node::Not(_) | Node::And(_) | Node::Or(_) | Node::Compare(..) => {
            Some("a boolean")
        }
        Node::Literal(Value::Null) => Some("null"),
        Node::Event => Some("the whole event"),
        Node::Path { steps, .. } => match steps.last() {
            Some(Step::Select { kind: SelectKind::All, .. }) => {
                Some("a selection, which is a list; compare its size, as in '.size() > 0'")
            }
            Some(Step::Call { method, .. }) if method.non_boolean().is_none() => Some("a boolean"),
            _ => None,
        },
        Node::Literal(_) | Node::This => None,
    }
}

// ---------------------------------------------------------------------------
// Lexing
// ---------------------------------------------------------------------------

#[derive(Debug, Clone, PartialEq)]
enum Tok {
    LParen,
    RParen,
    LBracket,
    RBracket,
    Comma,
    Dot,
    /// `?.`
    SafeDot,
    /// `?[`, `^[` or `$[`; the parser requires a `.` or `?.` before it.
    Select(SelectKind),
    AndAnd,
    OrOr,
    Bang,
    /// The symbolic comparison operators; the word forms arrive as `Word`.
    Cmp(CmpOp),
    /// A name or a keyword; which one depends on where it appears.
    Word(String),
    /// `#name`
    Hash(String),
    Str(String),
    Num(Number),
    /// Any other character, kept as a token so that the parser can say what it expected.
    Other(char),
    End,
}

#[derive(Debug, Clone)]
struct Token {
    kind: Tok,
    /// Character offsets of the token in the input.
    start: usize,
    end: usize,
}

/// Characters that start an operator in some language a user may be thinking of; a run of
/// them where an operator belongs is reported as one unknown operator.
const OPERATOR_CHARS: &str = "=!<>&|+-*/%^~?:";

const OPERATOR_LIST: &str = "one of eq ne gt ge lt le == != > >= < <= && || and or";

/// Words with a fixed meaning; they are never property names in operand position.
const KEYWORDS: [&str; 9] = ["and", "or", "not", "eq", "ne", "gt", "ge", "lt", "le"];

fn is_ident_start(c: char) -> bool {
    c.is_ascii_alphabetic() || c == '_' || c == '$'
}

fn is_ident_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || c == '_' || c == '$'
}

fn is_keyword(word: &str) -> bool {
    KEYWORDS.iter().any(|k| word.eq_ignore_ascii_case(k))
}

/// Words that start an operand rather than continuing an expression.
fn is_operand_word(word: &str) -> bool {
    word == "event" || ["true", "false", "null"].iter().any(|k| word.eq_ignore_ascii_case(k))
}

fn is_word(kind: &Tok, keyword: &str) -> bool {
    matches!(kind, Tok::Word(w) if w.eq_ignore_ascii_case(keyword))
}

fn cmp_op(kind: &Tok) -> Option<CmpOp> {
    match kind {
        Tok::Cmp(op) => Some(*op),
        Tok::Word(w) => CmpOp::from_word(w),
        _ => None,
    }
}

/// What an unclosed construct was, for "expected ']' to close ..." messages.
struct Closer {
    ch: char,
    what: String,
}

/// Recursive-descent parser with one token of lookahead. Tokens are produced on demand so
/// that the first error in reading order is the one reported.
struct Parser {
    chars: Vec<char>,
    pos: usize,
    peeked: Option<Token>,
    /// Span of the last consumed token, for "missing operand after ..." messages.
    prev: Option<(usize, usize)>,
    /// Whether that token was a comparison operator, for the "quote it" hint.
    prev_was_cmp: bool,
    depth: usize,
    /// How many selections enclose the current position; bare names are allowed only inside.
    in_selection: usize,
}

impl Parser {
    fn new(input: &str) -> Self {
        Parser {
            chars: input.chars().collect(),
            pos: 0,
            peeked: None,
            prev: None,
            prev_was_cmp: false,
            depth: 0,
            in_selection: 0,
        }
    }

    fn peek(&mut self) -> Result<&Token, ExprError> {
        let tok = match self.peeked.take() {
            Some(tok) => tok,
            None => self.lex()?,
        };
        Ok(self.peeked.insert(tok))
    }

    fn next(&mut self) -> Result<Token, ExprError> {
        let tok = match self.peeked.take() {
            Some(tok) => tok,
            None => self.lex()?,
        };
        self.prev = Some((tok.start, tok.end));
        self.prev_was_cmp = cmp_op(&tok.kind).is_some();
        Ok(tok)
    }

    fn current(&self) -> Option<char> {
        self.chars.get(self.pos).copied()
    }

    fn char_at(&self, offset: usize) -> Option<char> {
        self.chars.get(self.pos + offset).copied()
    }

    fn text(&self, start: usize, end: usize) -> String {
        self.chars.get(start..end).unwrap_or(&[]).iter().collect()
    }

    /// How a token is named in messages: its source text, shortened so that a long string
    /// literal does not swamp the message.
    fn describe(&self, tok: &Token) -> String {
        const MAX_CHARS: usize = 32;
        let text = if tok.end - tok.start > MAX_CHARS {
            format!("{}...", self.text(tok.start, tok.start + MAX_CHARS))
        } else {
            self.text(tok.start, tok.end)
        };
        match tok.kind {
            Tok::End => "end of input".to_owned(),
            // A string token already carries its quotes.
            Tok::Str(_) => text,
            _ => format!("'{text}'"),
        }
    }

    fn enter(&mut self, at: usize) -> Result<(), ExprError> {
        self.depth += 1;
        if self.depth > MAX_DEPTH {
            return Err(ExprError::new(
                at,
                format!(
                    "expression is nested too deeply (more than {MAX_DEPTH} levels of parentheses, brackets, \
                     method calls and '!')"
                ),
            ));
        }
        Ok(())
    }

    fn leave(&mut self) {
        self.depth = self.depth.saturating_sub(1);
    }

    fn lex(&mut self) -> Result<Token, ExprError> {
        while self.current().is_some_and(char::is_whitespace) {
            self.pos += 1;
        }
        let start = self.pos;
        let Some(c) = self.current() else {
            return Ok(Token { kind: Tok::End, start, end: start });
        };
        let next = self.char_at(1);
        let (kind, len) = match (c, next) {
            ('(', _) => (Tok::LParen, 1),
            (')', _) => (Tok::RParen, 1),
            ('[', _) => (Tok::LBracket, 1),
            (']', _) => (Tok::RBracket, 1),
            (',', _) => (Tok::Comma, 1),
            ('.', _) => (Tok::Dot, 1),
            ('?', Some('.')) => (Tok::SafeDot, 2),
            ('?', Some('[')) => (Tok::Select(SelectKind::All), 2),
            ('^', Some('[')) => (Tok::Select(SelectKind::First), 2),
            ('$', Some('[')) => (Tok::Select(SelectKind::Last), 2),
            ('&', Some('&')) => (Tok::AndAnd, 2),
            ('|', Some('|')) => (Tok::OrOr, 2),
            ('=', Some('=')) => (Tok::Cmp(CmpOp::Eq), 2),
            ('!', Some('=')) => (Tok::Cmp(CmpOp::Ne), 2),
            ('<', Some('=')) => (Tok::Cmp(CmpOp::Le), 2),
            ('>', Some('=')) => (Tok::Cmp(CmpOp::Ge), 2),
            ('<', _) => (Tok::Cmp(CmpOp::Lt), 1),
            ('>', _) => (Tok::Cmp(CmpOp::Gt), 1),
            ('!', _) => (Tok::Bang, 1),
            ('\'' | '"', _) => {
                let text = self.lex_string(c)?;
                return Ok(Token { kind: Tok::Str(text), start, end: self.pos });
            }
            ('0'..='9', _) | ('-', Some('0'..='9')) => {
                let number = self.lex_number()?;
                return Ok(Token { kind: Tok::Num(number), start, end: self.pos });
            }
            ('#', Some(n)) if is_ident_start(n) => {
                self.pos += 1;
                let name = self.lex_word();
                return Ok(Token { kind: Tok::Hash(name), start, end: self.pos });
            }
            (c, _) if is_ident_start(c) => {
                let word = self.lex_word();
                return Ok(Token { kind: Tok::Word(word), start, end: self.pos });
            }
            (other, _) => (Tok::Other(other), 1),
        };
        self.pos += len;
        Ok(Token { kind, start, end: self.pos })
    }

    fn lex_word(&mut self) -> String {
        let start = self.pos;
        while self.current().is_some_and(is_ident_char) {
            self.pos += 1;
        }
        self.text(start, self.pos)
    }

    /// SpEL strings have no backslash escapes: the quote character is written twice.
    fn lex_string(&mut self, quote: char) -> Result<String, ExprError> {
        let open = self.pos;
        self.pos += 1;
        let mut out = String::new();
        loop {
            let Some(c) = self.current() else {
                return Err(ExprError::new(
                    open,
                    format!(
                        "unterminated string (missing closing {quote}; a {quote} inside the string is written twice, \
                         as in {quote}it{quote}{quote}s{quote})"
                    ),
                ));
            };
            self.pos += 1;
            if c != quote {
                out.push(c);
            } else if self.current() == Some(quote) {
                out.push(quote);
                self.pos += 1;
            } else {
                return Ok(out);
            }
        }
    }

    fn eat_digits(&mut self) {
        while self.current().is_some_and(|c| c.is_ascii_digit()) {
            self.pos += 1;
        }
    }

    /// A fraction or exponent is taken only when a digit follows, so that `1.size()` and
    /// `0eq x` lex the way SpEL's tokenizer does.
    fn lex_number(&mut self) -> Result<Number, ExprError> {
        let start = self.pos;
        if self.current() == Some('-') {
            self.pos += 1;
        }
        self.eat_digits();
        let mut integral = true;
        if self.current() == Some('.') && self.char_at(1).is_some_and(|c| c.is_ascii_digit()) {
            self.pos += 1;
            self.eat_digits();
            integral = false;
        }
        if matches!(self.current(), Some('e' | 'E')) {
            let digit_at = if matches!(self.char_at(1), Some('+' | '-')) { 2 } else { 1 };
            if self.char_at(digit_at).is_some_and(|c| c.is_ascii_digit()) {
                self.pos += digit_at;
                self.eat_digits();
                integral = false;
            }
        }
        // `00u123` is an unquoted id rather than the number 0 followed by a word. Keywords may
        // follow directly, as SpEL's tokenizer allows (`size()>0and ...`).
        if self.current().is_some_and(is_ident_char) {
            let word_start = self.pos;
            let mut word_end = word_start;
            while self.chars.get(word_end).copied().is_some_and(is_ident_char) {
                word_end += 1;
            }
            if !is_keyword(&self.text(word_start, word_end)) {
                let text = self.text(start, word_end);
                return Err(ExprError::new(
                    start,
                    format!("invalid number '{text}'; text values must be quoted, as in '{text}'"),
                ));
            }
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
            .ok_or_else(|| ExprError::new(start, format!("number '{text}' is out of range")))
    }

    // -----------------------------------------------------------------------
    // Parsing
    // -----------------------------------------------------------------------

    fn parse_or(&mut self) -> Result<Node, ExprError> {
        let start = self.peek()?.start;
        let first = self.parse_and()?;
        if !self.peek_or()? {
            return Ok(first);
        }
        let mut operands = vec![(first, start)];
        while self.peek_or()? {
            let op = self.next()?;
            self.reject_glued_operator(&op)?;
            let start = self.peek()?.start;
            operands.push((self.parse_and()?, start));
        }
        self.reject_unknown_operator()?;
        for (node, start) in &operands {
            check_boolean(node, *start, "each side of '||'", None)?;
        }
        Ok(Node::Or(operands.into_iter().map(|(node, _)| node).collect()))
    }

    fn peek_or(&mut self) -> Result<bool, ExprError> {
        let kind = &self.peek()?.kind;
        Ok(*kind == Tok::OrOr || is_word(kind, "or"))
    }

    fn parse_and(&mut self) -> Result<Node, ExprError> {
        let start = self.peek()?.start;
        let first = self.parse_cmp()?;
        if !self.peek_and()? {
            return Ok(first);
        }
        let mut operands = vec![(first, start)];
        while self.peek_and()? {
            let op = self.next()?;
            self.reject_glued_operator(&op)?;
            let start = self.peek()?.start;
            operands.push((self.parse_cmp()?, start));
        }
        self.reject_unknown_operator()?;
        for (node, start) in &operands {
            check_boolean(node, *start, "each side of '&&'", None)?;
        }
        Ok(Node::And(operands.into_iter().map(|(node, _)| node).collect()))
    }

    fn peek_and(&mut self) -> Result<bool, ExprError> {
        let kind = &self.peek()?.kind;
        Ok(*kind == Tok::AndAnd || is_word(kind, "and"))
    }

    fn parse_cmp(&mut self) -> Result<Node, ExprError> {
        let left_start = self.peek()?.start;
        let left = self.parse_unary()?;
        let Some(op) = cmp_op(&self.peek()?.kind) else {
            return Ok(left);
        };
        let op_tok = self.next()?;
        self.reject_glued_operator(&op_tok)?;
        let right_start = self.peek()?.start;
        let right = self.parse_unary()?;
        let tok = self.peek()?;
        if cmp_op(&tok.kind).is_some() {
            return Err(ExprError::new(tok.start, "comparisons cannot be chained; combine them with '&&' or '||'"));
        }
        if !matches!(op, CmpOp::Eq | CmpOp::Ne) {
            for (operand, start) in [(&left, left_start), (&right, right_start)] {
                if let Some(what) = unordered(operand) {
                    let op_text = self.text(op_tok.start, op_tok.end);
                    return Err(ExprError::new(
                        start,
                        format!("'{op_text}' compares two numbers or two strings, but this is {what}"),
                    ));
                }
            }
        }
        Ok(Node::Compare(Box::new(left), op, Box::new(right)))
    }

    fn parse_unary(&mut self) -> Result<Node, ExprError> {
        let kind = &self.peek()?.kind;
        if *kind != Tok::Bang && !is_word(kind, "not") {
            return self.parse_postfix();
        }
        let bang = self.next()?;
        self.enter(bang.start)?;
        let start = self.peek()?.start;
        let inner = self.parse_unary()?;
        self.reject_unknown_operator()?;
        // `!` binds tighter than a comparison, as in SpEL, so `!a eq b` negates `a` alone.
        check_boolean(&inner, start, "what follows '!'", Some("to negate a comparison write '!(a eq b)' or use 'ne'"))?;
        self.leave();
        Ok(Node::Not(Box::new(inner)))
    }

    fn parse_postfix(&mut self) -> Result<Node, ExprError> {
        let (base, mut steps) = self.parse_atom()?;
        loop {
            let tok = self.peek()?;
            let (start, end) = (tok.start, tok.end);
            match tok.kind {
                Tok::Dot | Tok::SafeDot => {
                    let safe = tok.kind == Tok::SafeDot;
                    self.next()?;
                    let after_list = matches!(steps.last(), Some(Step::Select { kind: SelectKind::All, .. }));
                    let step = self.parse_member(start, end, safe, after_list)?;
                    // Okta's documented paths omit `debugContext`: `event.debugData.X` is
                    // the LogEvent's `debugContext.debugData.X`.
                    if base == Node::Event
                        && steps.is_empty()
                        && matches!(&step, Step::Property { name, .. } if name == "debugData")
                    {
                        steps.push(Step::Property { name: "debugContext".to_owned(), safe });
                    }
                    steps.push(step);
                }
                Tok::LBracket => {
                    self.next()?;
                    self.enter(start)?;
                    let index = self.parse_or()?;
                    let close = self.next()?;
                    if close.kind != Tok::RBracket {
                        let closer = Closer { ch: ']', what: format!("the index started at {start}") };
                        return Err(self.after_operand(&close, Some(closer)));
                    }
                    self.leave();
                    steps.push(Step::Index(Box::new(index)));
                }
                Tok::Select(_) => {
                    let text = self.text(start, end);
                    return Err(ExprError::new(start, format!("a selection is written '.{text}...]' (missing '.')")));
                }
                _ => break,
            }
        }
        Ok(if steps.is_empty() { base } else { Node::Path { base: Box::new(base), steps } })
    }

    /// What follows a `.` or `?.` spanning `dot_start..dot_end`.
    /// `after_list` says the receiver is a selection result, which has no properties.
    fn parse_member(
        &mut self,
        dot_start: usize,
        dot_end: usize,
        safe: bool,
        after_list: bool,
    ) -> Result<Step, ExprError> {
        let tok = self.next()?;
        match tok.kind {
            Tok::Word(name) => {
                if self.peek()?.kind == Tok::LParen {
                    self.parse_call(&name, tok.start, safe)
                } else if after_list {
                    let hint = if Method::lookup(&name).is_some() {
                        format!("; did you mean '{name}()'?")
                    } else {
                        String::new()
                    };
                    Err(ExprError::new(
                        tok.start,
                        format!("a selection is a list, which has no property '{name}'{hint}"),
                    ))
                } else {
                    Ok(Step::Property { name, safe })
                }
            }
            Tok::Select(kind) => self.parse_selection(dot_start, kind, safe),
            _ => Err(ExprError::new(
                tok.start,
                format!(
                    "expected a property name, a method call or a selection after '{}', found {}",
                    self.text(dot_start, dot_end),
                    self.describe(&tok)
                ),
            )),
        }
    }

    fn parse_call(&mut self, name: &str, at: usize, safe: bool) -> Result<Step, ExprError> {
        // Checked before the arguments so that the position points at the name.
        let Some((method, arity)) = Method::lookup(name) else {
            return Err(ExprError::new(
                at,
                format!("unknown method '{name}()'; the supported methods are {}", Method::LIST),
            ));
        };
        let open = self.next()?;
        self.enter(open.start)?;
        let mut args = Vec::new();
        if self.peek()?.kind == Tok::RParen {
            self.next()?;
        } else {
            loop {
                args.push(self.parse_or()?);
                let tok = self.next()?;
                match tok.kind {
                    Tok::Comma => {}
                    Tok::RParen => break,
                    _ => {
                        let closer =
                            Closer { ch: ')', what: format!("the arguments of '{name}' started at {}", open.start) };
                        return Err(self.after_operand(&tok, Some(closer)));
                    }
                }
            }
        }
        self.leave();
        if args.len() != arity {
            let expected = if arity == 1 { "one argument" } else { "no arguments" };
            return Err(ExprError::new(at, format!("'{name}()' takes {expected}, got {}", args.len())));
        }
        Ok(Step::Call { method, args, safe })
    }

    fn parse_selection(&mut self, start: usize, kind: SelectKind, safe: bool) -> Result<Step, ExprError> {
        self.enter(start)?;
        self.in_selection += 1;
        let tok = self.peek()?;
        let pred_start = tok.start;
        if tok.kind == Tok::RBracket {
            return Err(ExprError::new(pred_start, "empty selection: expected a condition before ']'"));
        }
        let pred = self.parse_or()?;
        let close = self.next()?;
        if close.kind != Tok::RBracket {
            let closer = Closer { ch: ']', what: format!("the selection started at {start}") };
            return Err(self.after_operand(&close, Some(closer)));
        }
        check_boolean(&pred, pred_start, "a selection condition", None)?;
        self.in_selection -= 1;
        self.leave();
        Ok(Step::Select { kind, pred: Box::new(pred), safe })
    }

    /// An operand: the node it starts with plus, for a bare name inside a selection, the
    /// implied property step on the element.
    fn parse_atom(&mut self) -> Result<(Node, Vec<Step>), ExprError> {
        let before = self.prev;
        let after_cmp = self.prev_was_cmp;
        let tok = self.next()?;
        let missing_before = |parser: &Parser, tok: &Token| {
            ExprError::new(tok.start, format!("missing operand before {}", parser.describe(tok)))
        };
        let node = match tok.kind {
            Tok::LParen => {
                self.enter(tok.start)?;
                let inner = self.parse_or()?;
                let close = self.next()?;
                if close.kind != Tok::RParen {
                    let closer = Closer { ch: ')', what: format!("the '(' at {}", tok.start) };
                    return Err(self.after_operand(&close, Some(closer)));
                }
                self.leave();
                inner
            }
            Tok::Str(s) => Node::Literal(Value::String(s)),
            Tok::Num(n) => Node::Literal(Value::Number(n)),
            Tok::Word(ref w) if w.eq_ignore_ascii_case("true") => Node::Literal(Value::Bool(true)),
            Tok::Word(ref w) if w.eq_ignore_ascii_case("false") => Node::Literal(Value::Bool(false)),
            Tok::Word(ref w) if w.eq_ignore_ascii_case("null") => Node::Literal(Value::Null),
            Tok::Word(ref w) if w == "event" => Node::Event,
            Tok::Word(ref w) if is_keyword(w) => return Err(missing_before(self, &tok)),
            Tok::Word(name) if self.in_selection > 0 => {
                return Ok((Node::This, vec![Step::Property { name, safe: false }]));
            }
            Tok::Word(name) => {
                let hint = if name.eq_ignore_ascii_case("event") {
                    "; names are case-sensitive".to_owned()
                } else if after_cmp {
                    format!("; text values must be quoted, as in '{name}'")
                } else {
                    "; bare property names are allowed only inside a selection '.?[...]'".to_owned()
                };
                return Err(ExprError::new(
                    tok.start,
                    format!("a path must start with 'event', but this one starts with '{name}'{hint}"),
                ));
            }
            Tok::Hash(name) if name == "this" => {
                if self.in_selection == 0 {
                    return Err(ExprError::new(tok.start, "'#this' can only be used inside a selection '.?[...]'"));
                }
                Node::This
            }
            Tok::Hash(name) => {
                return Err(ExprError::new(
                    tok.start,
                    format!("unknown variable '#{name}'; only '#this' is supported"),
                ));
            }
            Tok::End => {
                let message = match before {
                    Some((start, end)) => format!("missing operand after '{}'", self.text(start, end)),
                    None => "empty expression".to_owned(),
                };
                return Err(ExprError::new(tok.start, message));
            }
            Tok::Other(c) if !OPERATOR_CHARS.contains(c) => {
                return Err(ExprError::new(tok.start, format!("unexpected character '{c}'")));
            }
            _ => return Err(missing_before(self, &tok)),
        };
        Ok((node, Vec::new()))
    }

    /// Fails if the symbolic operator `op` just consumed runs straight into more operator
    /// characters, as in `===`, `<>` or `&&&`: naming the whole run as one unknown operator
    /// beats complaining about a missing operand before its tail. `!` and `-1` may follow
    /// directly (`a ==!b`, `a>-1`), so they do not count.
    fn reject_glued_operator(&mut self, op: &Token) -> Result<(), ExprError> {
        let symbolic = matches!(op.kind, Tok::Cmp(_) | Tok::AndAnd | Tok::OrOr);
        let next = self.peek()?;
        let glued = next.start == op.end
            && match next.kind {
                Tok::Cmp(_) | Tok::AndAnd | Tok::OrOr => true,
                Tok::Other(c) => OPERATOR_CHARS.contains(c),
                _ => false,
            };
        if !(symbolic && glued) {
            return Ok(());
        }
        let run = self.operator_run(op.start);
        Err(ExprError::new(op.start, format!("unknown operator '{run}'; expected {OPERATOR_LIST}")))
    }

    fn operator_run(&self, start: usize) -> String {
        self.chars.get(start..).unwrap_or(&[]).iter().take_while(|c| OPERATOR_CHARS.contains(**c)).collect()
    }

    /// Fails if the next token is a word or symbol standing where an operator belongs but
    /// naming none we know, such as `=`, `&` or `matches`.
    fn reject_unknown_operator(&mut self) -> Result<(), ExprError> {
        let tok = self.peek()?.clone();
        match self.unknown_operator(&tok) {
            Some(err) => Err(err),
            None => Ok(()),
        }
    }

    fn unknown_operator(&self, tok: &Token) -> Option<ExprError> {
        let (text, hint) = match &tok.kind {
            Tok::Word(w) if is_keyword(w) || is_operand_word(w) => return None,
            Tok::Word(w) => (w.clone(), ""),
            Tok::Bang => ("!".to_owned(), ""),
            Tok::Other(c) if OPERATOR_CHARS.contains(*c) => {
                let run = self.operator_run(tok.start);
                let hint = match c {
                    '=' => "; use '==' or 'eq' to compare",
                    '&' => "; use '&&' or 'and'",
                    '|' => "; use '||' or 'or'",
                    '+' | '-' | '*' | '/' | '%' => "; arithmetic is not supported",
                    _ => "",
                };
                (run, hint)
            }
            _ => return None,
        };
        Some(ExprError::new(tok.start, format!("unknown operator '{text}'{hint}; expected {OPERATOR_LIST}")))
    }

    /// The error for a token that follows a complete operand but is not what the enclosing
    /// construct needs next (its closing `closer`, or the end of input at the top level).
    fn after_operand(&self, tok: &Token, closer: Option<Closer>) -> ExprError {
        if let Some(err) = self.unknown_operator(tok) {
            return err;
        }
        let found = self.describe(tok);
        let message = match (closer, &tok.kind) {
            (Some(closer), Tok::End) => format!("expected '{}' to close {}", closer.ch, closer.what),
            (Some(closer), _) => format!("expected '{}' to close {}, found {found}", closer.ch, closer.what),
            (None, Tok::RParen) => "unexpected ')' without a matching '('".to_owned(),
            (None, Tok::RBracket) => "unexpected ']' without a matching '['".to_owned(),
            (None, Tok::Other(c)) => format!("unexpected character '{c}'"),
            (None, _) => format!("unexpected {found} after a complete expression; expected an operator or the end"),
        };
        ExprError::new(tok.start, message)
    }
}

// ---------------------------------------------------------------------------
// Evaluation
// ---------------------------------------------------------------------------

/// A runtime error. Its cause is never reported: any failure simply means "no match".
struct Fail;

/// A value during evaluation, borrowing from the event or the expression where it can.
enum Val<'a> {
    Null,
    Bool(bool),
    Num(Number),
    Str(Cow<'a, str>),
    Obj(&'a Map<String, Value>),
    Arr(&'a [Value]),
    /// A selection result: some elements of an array in the event.
    List(Vec<&'a Value>),
}

impl<'a> Val<'a> {
    fn of(value: &'a Value) -> Self {
        match value {
            Value::Null => Val::Null,
            Value::Bool(b) => Val::Bool(*b),
            Value::Number(n) => Val::Num(n.clone()),
            Value::String(s) => Val::Str(Cow::Borrowed(s)),
            Value::Array(items) => Val::Arr(items),
            Value::Object(map) => Val::Obj(map),
        }
    }

    fn elements(&self) -> Option<Elements<'_, 'a>> {
        match self {
            Val::Arr(items) => Some(Elements::Arr(items.iter())),
            Val::List(items) => Some(Elements::List(items.iter())),
            _ => None,
        }
    }

    fn seq_len(&self) -> Option<usize> {
        match self {
            Val::Arr(items) => Some(items.len()),
            Val::List(items) => Some(items.len()),
            _ => None,
        }
    }
}

enum Elements<'v, 'a> {
    Arr(std::slice::Iter<'a, Value>),
    List(std::slice::Iter<'v, &'a Value>),
}

impl<'a> Iterator for Elements<'_, 'a> {
    type Item = &'a Value;

    fn next(&mut self) -> Option<&'a Value> {
        match self {
            Elements::Arr(items) => items.next(),
            Elements::List(items) => items.next().copied(),
        }
    }

    fn nth(&mut self, n: usize) -> Option<&'a Value> {
        match self {
            Elements::Arr(items) => items.nth(n),
            Elements::List(items) => items.nth(n).copied(),
        }
    }
}

/// What string work costs against the budget: long strings are charged per 64 bytes so
/// that a budget of operations is also a budget of time.
fn string_cost(s: &str) -> usize {
    1 + s.len() / 64
}

struct Evaluator<'a> {
    root: &'a Value,
    budget: usize,
}

impl<'a> Evaluator<'a> {
    fn charge(&mut self, cost: usize) -> Result<(), Fail> {
        self.budget = self.budget.checked_sub(cost).ok_or(Fail)?;
        Ok(())
    }

    /// `this` is the current selection element (`None` outside selections).
    fn eval(&mut self, node: &'a Node, this: Option<&'a Value>) -> Result<Val<'a>, Fail> {
        self.charge(1)?;
        match node {
            Node::Literal(value) => Ok(Val::of(value)),
            Node::Event => Ok(Val::of(self.root)),
            Node::This => this.map(Val::of).ok_or(Fail),
            Node::Path { base, steps } => {
                let mut current = self.eval(base, this)?;
                for step in steps {
                    current = self.step(current, step, this)?;
                }
                Ok(current)
            }
            Node::Not(inner) => Ok(Val::Bool(!self.condition(inner, this)?)),
            Node::And(operands) => {
                for operand in operands {
                    if !self.condition(operand, this)? {
                        return Ok(Val::Bool(false));
                    }
                }
                Ok(Val::Bool(true))
            }
            Node::Or(operands) => {
                for operand in operands {
                    if self.condition(operand, this)? {
                        return Ok(Val::Bool(true));
                    }
                }
                Ok(Val::Bool(false))
            }
            Node::Compare(left, op, right) => {
                let left = self.eval(left, this)?;
                let right = self.eval(right, this)?;
                self.compare(&left, *op, &right).map(Val::Bool)
            }
        }
    }

    fn condition(&mut self, node: &'a Node, this: Option<&'a Value>) -> Result<bool, Fail> {
        match self.eval(node, this)? {
            Val::Bool(b) => Ok(b),
            _ => Err(Fail),
        }
    }

    fn step(&mut self, current: Val<'a>, step: &'a Step, this: Option<&'a Value>) -> Result<Val<'a>, Fail> {
        match step {
            Step::Property { name, safe } => match current {
                Val::Obj(map) => Ok(map.get(name).map_or(Val::Null, Val::of)),
                Val::Null if *safe => Ok(Val::Null),
                _ => Err(Fail),
            },
            Step::Index(index) => {
                // SpEL evaluates an index against the enclosing context, not the receiver.
                let index = self.eval(index, this)?;
                match (&current, &index) {
                    (Val::Obj(map), Val::Str(key)) => Ok(map.get(key.as_ref()).map_or(Val::Null, Val::of)),
                    (_, Val::Num(n)) => {
                        let i = n.as_u64().and_then(|i| usize::try_from(i).ok()).ok_or(Fail)?;
                        current.elements().and_then(|mut items| items.nth(i)).map(Val::of).ok_or(Fail)
                    }
                    _ => Err(Fail),
                }
            }
            Step::Select { kind, pred, safe } => {
                if *safe && matches!(current, Val::Null) {
                    return Ok(Val::Null);
                }
                let elements = current.elements().ok_or(Fail)?;
                let mut kept = Vec::new();
                for element in elements {
                    self.charge(1)?;
                    if self.condition(pred, Some(element))? {
                        if *kind == SelectKind::First {
                            return Ok(Val::of(element));
                        }
                        kept.push(element);
                    }
                }
                Ok(match kind {
                    SelectKind::All => Val::List(kept),
                    SelectKind::First => Val::Null,
                    SelectKind::Last => kept.last().map_or(Val::Null, |element| Val::of(element)),
                })
            }
            Step::Call { method, args, safe } => {
                if matches!(current, Val::Null) {
                    return if *safe { Ok(Val::Null) } else { Err(Fail) };
                }
                let mut values = Vec::with_capacity(args.len());
                for arg in args {
                    values.push(self.eval(arg, this)?);
                }
                self.call(*method, &current, &values)
            }
        }
    }

    fn call(&mut self, method: Method, receiver: &Val<'a>, args: &[Val<'a>]) -> Result<Val<'a>, Fail> {
        match (method, receiver, args) {
            (Method::Size, Val::Str(s), []) => {
                self.charge(string_cost(s))?;
                Ok(count(s.chars().count()))
            }
            (Method::Size, Val::Obj(map), []) => Ok(count(map.len())),
            (Method::Size, _, []) => receiver.seq_len().map(count).ok_or(Fail),
            (Method::IsEmpty, Val::Str(s), []) => Ok(Val::Bool(s.is_empty())),
            (Method::IsEmpty, Val::Obj(map), []) => Ok(Val::Bool(map.is_empty())),
            (Method::IsEmpty, _, []) => receiver.seq_len().map(|n| Val::Bool(n == 0)).ok_or(Fail),
            (Method::Contains, Val::Str(s), [Val::Str(needle)]) => {
                self.charge(string_cost(s))?;
                Ok(Val::Bool(s.contains(needle.as_ref())))
            }
            (Method::Contains, _, [needle]) => {
                let elements = receiver.elements().ok_or(Fail)?;
                for element in elements {
                    self.charge(1)?;
                    if self.equal(&Val::of(element), needle)? {
                        return Ok(Val::Bool(true));
                    }
                }
                Ok(Val::Bool(false))
            }
            (Method::StartsWith, Val::Str(s), [Val::Str(prefix)]) => Ok(Val::Bool(s.starts_with(prefix.as_ref()))),
            (Method::EndsWith, Val::Str(s), [Val::Str(suffix)]) => Ok(Val::Bool(s.ends_with(suffix.as_ref()))),
            (Method::ToLowerCase, Val::Str(s), []) => {
                self.charge(string_cost(s))?;
                Ok(Val::Str(Cow::Owned(s.to_lowercase())))
            }
            (Method::ToUpperCase, Val::Str(s), []) => {
                self.charge(string_cost(s))?;
                Ok(Val::Str(Cow::Owned(s.to_uppercase())))
            }
            _ => Err(Fail),
        }
    }

    fn compare(&mut self, left: &Val<'a>, op: CmpOp, right: &Val<'a>) -> Result<bool, Fail> {
        match op {
            CmpOp::Eq => self.equal(left, right),
            CmpOp::Ne => self.equal(left, right).map(|equal| !equal),
            _ => {
                let ordering = match (left, right) {
                    (Val::Num(a), Val::Num(b)) => cmp_numbers(a, b).ok_or(Fail)?,
                    (Val::Str(a), Val::Str(b)) => {
                        self.charge(1 + a.len().min(b.len()) / 64)?;
                        // Java's `compareTo` orders by UTF-16 code unit, which differs from
                        // byte order for characters above U+FFFF.
                        a.encode_utf16().cmp(b.encode_utf16())
                    }
                    _ => return Err(Fail),
                };
                Ok(op.holds(ordering))
            }
        }
    }

    /// SpEL equality: numbers by value, everything else by kind and content. Never fails
    /// except by running out of budget.
    fn equal(&mut self, left: &Val<'a>, right: &Val<'a>) -> Result<bool, Fail> {
        Ok(match (left, right) {
            (Val::Null, Val::Null) => true,
            (Val::Bool(a), Val::Bool(b)) => a == b,
            (Val::Num(a), Val::Num(b)) => cmp_numbers(a, b) == Some(Ordering::Equal),
            (Val::Str(a), Val::Str(b)) => {
                self.charge(string_cost(a))?;
                a == b
            }
            (Val::Arr(a), Val::Arr(b)) if std::ptr::eq(*a, *b) => true,
            (Val::Obj(a), Val::Obj(b)) => {
                self.charge(1 + a.len())?;
                // The identity check keeps `event eq event` from walking the whole event.
                std::ptr::eq(*a, *b) || a == b
            }
            _ => match (left.elements(), right.elements(), left.seq_len(), right.seq_len()) {
                (Some(a), Some(b), Some(a_len), Some(b_len)) => {
                    self.charge(1 + a_len)?;
                    a_len == b_len && a.zip(b).all(|(a, b)| json_equal(a, b))
                }
                _ => false,
            },
        })
    }
}

fn count(n: usize) -> Val<'static> {
    Val::Num(Number::from(u64::try_from(n).unwrap_or(u64::MAX)))
}

/// Element equality inside arrays: numbers by value at the top level, JSON equality below.
fn json_equal(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Number(a), Value::Number(b)) => cmp_numbers(a, b) == Some(Ordering::Equal),
        _ => a == b,
    }
}

/// Integers compare exactly (an `i64` and a `u64` may meet); anything with a fractional part
/// goes through `f64`, so that `1` equals `1.0`.
fn cmp_numbers(a: &Number, b: &Number) -> Option<Ordering> {
    fn integer(n: &Number) -> Option<i128> {
        n.as_i64().map(i128::from).or_else(|| n.as_u64().map(i128::from))
    }
    match (integer(a), integer(b)) {
        (Some(a), Some(b)) => Some(a.cmp(&b)),
        _ => a.as_f64()?.partial_cmp(&b.as_f64()?),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn parse(input: &str) -> Expression {
        match Expression::parse(input) {
            Ok(expr) => expr,
            Err(e) => panic!("{input:?} should parse: {e}"),
        }
    }

    fn err(input: &str) -> ExprError {
        match Expression::parse(input) {
            Ok(expr) => panic!("{input:?} should be rejected, got {expr:?}"),
            Err(e) => e,
        }
    }

    /// Asserts the error position and that the message contains `needle`.
    fn assert_err(input: &str, position: usize, needle: &str) {
        let e = err(input);
        assert_eq!(e.position, position, "{input:?}: {e}");
        assert!(e.message.contains(needle), "{input:?}: message {:?} lacks {needle:?}", e.message);
    }

    fn m(input: &str, event: &Value) -> bool {
        parse(input).matches(event)
    }

    /// A `group.user_membership.add` event shaped like Okta's hook payloads.
    fn event() -> Value {
        json!({
            "uuid": "5b9d2b1c-1c1a-11ef-9a4d-0242ac120002",
            "published": "2026-05-01T10:00:00.000Z",
            "eventType": "group.user_membership.add",
            "version": "0",
            "severity": "INFO",
            "legacyEventType": "core.user_group_member.user_add",
            "displayMessage": "Add user to group membership",
            "actor": {"id": "00uadmin1", "type": "User", "alternateId": "admin@example.org", "displayName": "Admin"},
            "client": null,
            "outcome": {"result": "SUCCESS", "reason": null},
            "target": [
                {"id": "00u1abc", "type": "User", "alternateId": "lee@example.org", "displayName": "Lee Chen"},
                {"id": "00g1sales", "type": "UserGroup", "alternateId": "unknown", "displayName": "Sales"}
            ],
            "transaction": {"type": "WEB", "id": "tx1", "detail": {}},
            "debugContext": {"debugData": {"requestId": "req1", "changedAttributes": "email,firstName"}},
            "securityContext": {"isProxy": false}
        })
    }

    /// `event()` with the value at each JSON pointer replaced.
    fn with(changes: &[(&str, Value)]) -> Value {
        let mut ev = event();
        for (pointer, value) in changes {
            match ev.pointer_mut(pointer) {
                Some(slot) => *slot = value.clone(),
                None => panic!("no {pointer} in the sample event"),
            }
        }
        ev
    }

    fn target(kind: &str, id: &str, alternate_id: &str, display_name: &str) -> Value {
        json!({"id": id, "type": kind, "alternateId": alternate_id, "displayName": display_name})
    }

    fn check_example(expr: &str, yes: &[Value], no: &[Value]) {
        let parsed = parse(expr);
        for (i, ev) in yes.iter().enumerate() {
            assert!(parsed.matches(ev), "{expr:?} should match event #{i}: {ev}");
        }
        for (i, ev) in no.iter().enumerate() {
            assert!(!parsed.matches(ev), "{expr:?} should not match event #{i}: {ev}");
        }
    }

    #[test]
    fn example_1_group_named_sales() {
        check_example(
            "event.target.?[type eq 'UserGroup' && displayName eq 'Sales'].size() > 0",
            &[event()],
            &[
                with(&[("/target/1/displayName", json!("Marketing"))]),
                // Both conditions must hold for the same element.
                with(&[(
                    "/target",
                    json!([
                        target("User", "00u1", "s@example.org", "Sales"),
                        target("UserGroup", "00g2", "m", "Marketing")
                    ]),
                )]),
                with(&[("/target", json!([]))]),
                with(&[("/target", Value::Null)]),
            ],
        );
    }

    #[test]
    fn example_2_group_and_sales_anywhere() {
        check_example(
            "event.target.?[type eq 'UserGroup'].size()>0 && event.target.?[displayName eq 'Sales'].size()>0",
            &[
                event(),
                with(&[(
                    "/target",
                    json!([
                        target("User", "00u1", "s@example.org", "Sales"),
                        target("UserGroup", "00g2", "m", "Marketing")
                    ]),
                )]),
            ],
            &[with(&[("/target/1/type", json!("AppInstance"))]), with(&[("/target/1/displayName", json!("sales"))])],
        );
    }

    #[test]
    fn example_3_user_added_to_admin_group() {
        check_example(
            "event.target.?[type eq 'User' && id eq '00u1abc'].size()>0 && \
             event.target.?[type eq 'UserGroup' && displayName eq 'Admin'].size()> 0",
            &[with(&[("/target/1/displayName", json!("Admin"))])],
            &[
                event(),
                with(&[("/target/1/displayName", json!("Admin")), ("/target/0/id", json!("00u2other"))]),
                with(&[("/target/1/displayName", json!("Admin")), ("/target/0/type", json!("AppUser"))]),
            ],
        );
    }

    #[test]
    fn example_4_bookmark_app() {
        let app = with(&[(
            "/target",
            json!([target("AppInstance", "0oa1", "My Bookmark App", "Bookmark"), target("User", "00u1", "a", "A")]),
        )]);
        check_example(
            "event.target.?[type eq 'AppInstance' && alternateId eq 'My Bookmark App'].size()> 0",
            &[app],
            &[
                event(),
                with(&[("/target", json!([target("AppInstance", "0oa1", "My Other App", "Bookmark")]))]),
                with(&[("/target", json!([target("AppUser", "0oa1", "My Bookmark App", "Bookmark")]))]),
            ],
        );
    }

    #[test]
    fn example_5_changed_attributes() {
        check_example(
            "event.debugData.changedAttributes.contains('email') || \
             event.debugData.changedAttributes.contains('manager')",
            &[event(), with(&[("/debugContext/debugData/changedAttributes", json!("manager,title"))])],
            &[
                with(&[("/debugContext/debugData/changedAttributes", json!("firstName,lastName"))]),
                with(&[("/debugContext/debugData/changedAttributes", json!("EMAIL"))]),
                with(&[("/debugContext/debugData/changedAttributes", Value::Null)]),
                with(&[("/debugContext/debugData", json!({}))]),
                with(&[("/debugContext", Value::Null)]),
            ],
        );
    }

    #[test]
    fn example_6_success() {
        check_example(
            "event.outcome.result eq 'SUCCESS'",
            &[event()],
            &[
                with(&[("/outcome/result", json!("FAILURE"))]),
                with(&[("/outcome/result", json!("success"))]),
                with(&[("/outcome", Value::Null)]),
            ],
        );
    }

    #[test]
    fn example_7_admin_failure() {
        check_example(
            "event.actor.alternateId eq 'admin@example.org' && event.outcome.result eq 'FAILURE'",
            &[with(&[("/outcome/result", json!("FAILURE"))])],
            &[
                event(),
                with(&[("/outcome/result", json!("FAILURE")), ("/actor/alternateId", json!("lee@example.org"))]),
            ],
        );
    }

    #[test]
    fn example_8_security_question() {
        check_example(
            "event.outcome.reason.contains('SECURITY_QUESTION')",
            &[
                with(&[("/outcome/reason", json!("SECURITY_QUESTION"))]),
                with(&[("/outcome/reason", json!("FACTOR SECURITY_QUESTION enrolled"))]),
            ],
            &[
                with(&[("/outcome/reason", json!("SMS_FACTOR"))]),
                with(&[("/outcome/reason", json!("security_question"))]),
                event(),
            ],
        );
    }

    #[test]
    fn example_9_session_end_by_someone_else() {
        check_example(
            "event.eventType eq 'user.session.end' && event.actor.id ne '00uadmin1'",
            &[with(&[("/eventType", json!("user.session.end")), ("/actor/id", json!("00u1abc"))])],
            &[event(), with(&[("/eventType", json!("user.session.end"))])],
        );
    }

    #[test]
    fn operators_need_no_surrounding_spaces() {
        let ev = event();
        assert!(m("event.outcome.result eq'SUCCESS'", &ev));
        assert!(m("event.outcome.result eq\"SUCCESS\"", &ev));
        assert!(m("event.outcome.result=='SUCCESS'&&event.target.size()>1", &ev));
        assert!(m("event.outcome.result!='FAILURE'", &ev));
        assert!(m("(event.outcome.result)eq('SUCCESS')", &ev));
        assert!(m("event.target.size()>0and event.target.size()<3", &ev));
        assert!(!m("event.outcome.result eq'FAILURE'", &ev));
    }

    #[test]
    fn word_operators_are_case_insensitive() {
        let ev = event();
        assert!(m("event.outcome.result EQ 'SUCCESS' AND NOT (event.eventType Ne 'group.user_membership.add')", &ev));
        assert!(m("false OR event.target.size() GE 2", &ev));
        assert!(m("TRUE and not FALSE", &ev));
        assert!(m("event.client eq NULL", &ev));
    }

    #[test]
    fn precedence_and_short_circuit() {
        let ev = event();
        // `&&` binds tighter than `||`.
        assert!(m("false && false || true", &ev));
        assert!(m("true || false && false", &ev));
        assert!(!m("(true || false) && false", &ev));
        // `!` binds tighter than `&&`.
        assert!(!m("!false && false", &ev));
        assert!(m("!(false && false)", &ev));
        assert!(m("!!true", &ev));
        assert!(m("event.outcome.result eq 'FAILURE' && event.eventType eq 'x' || event.actor.id eq '00uadmin1'", &ev));
        // Short-circuiting means a failing right-hand side is never reached.
        assert!(m("true || event.outcome.reason.contains('X')", &ev));
        assert!(!m("false && event.outcome.reason.contains('X')", &ev));
        // A failure that is reached fails the whole expression, as a SpEL exception does.
        assert!(!m("event.outcome.reason.contains('X') || true", &ev));
        assert!(!m("!event.outcome.reason.contains('X')", &ev));
    }

    #[test]
    fn null_safety() {
        let ev = event();
        // reason is null: calling a method on it is a runtime error, so no match and no panic.
        assert!(!m("event.outcome.reason.contains('X')", &ev));
        assert!(!m("event.outcome.reason.size() > 0", &ev));
        assert!(m("event.outcome.reason eq null", &ev));
        assert!(m("event.noSuchField eq null", &ev));
        assert!(!m("event.noSuchField.deeper eq null", &ev));
        assert!(m("event.noSuchField?.deeper eq null", &ev));
        let guarded = "event.outcome.reason ne null && event.outcome.reason.contains('X')";
        assert!(!m(guarded, &ev));
        assert!(m(guarded, &with(&[("/outcome/reason", json!("AXB"))])));
        // `?.` turns a method call on null into null, which is not a boolean.
        assert!(!m("event.outcome.reason?.contains('X')", &ev));
        assert!(m("event.outcome.reason?.contains('X') eq null", &ev));
        let no_outcome = with(&[("/outcome", Value::Null)]);
        assert!(!m("event.outcome.result eq null", &no_outcome));
        assert!(m("event.outcome?.result eq null", &no_outcome));
        let no_targets = with(&[("/target", Value::Null)]);
        assert!(!m("event.target.?[type eq 'User'].size() == 0", &no_targets));
        assert!(m("event.target?.?[type eq 'User'] eq null", &no_targets));
        // Properties of non-objects are errors too, not panics.
        assert!(!m("event.eventType.length eq 1", &ev));
        assert!(!m("event.target.id eq 'x'", &ev));
        assert!(!m("event.target.size().contains('x')", &ev));
        // A target with a null displayName makes contains() fail for the whole selection.
        let null_name = with(&[("/target/0/displayName", Value::Null)]);
        assert!(!m("event.target.?[displayName.contains('Sales')].size() > 0", &null_name));
        assert!(m("event.target.?[displayName ne null && displayName.contains('Sales')].size() > 0", &null_name));
        // Events that are not LogEvents at all.
        for doc in [Value::Null, json!([]), json!("event"), json!(1), json!({})] {
            assert!(!m("event.outcome.result eq 'SUCCESS'", &doc));
            assert!(!m("event.target.?[type eq 'User'].size() > 0", &doc));
        }
    }

    #[test]
    fn selections_and_size() {
        let ev = event();
        assert!(m("event.target.?[type eq 'User'].size() eq 1", &ev));
        assert!(!m("event.target.?[type eq 'User'].size() == 2", &ev));
        assert!(m("event.target.size() == 2", &ev));
        assert!(m("event.target.?[type eq 'Nope'].size() == 0", &ev));
        assert!(m("event.target.?[type eq 'Nope'].isEmpty()", &ev));
        assert!(m("event.target.?[true].size() == event.target.size()", &ev));
        assert!(m("event.target.?[type eq 'User'].?[id eq '00u1abc'].size() == 1", &ev));
        assert!(m("event.target.?[#this.type eq 'UserGroup' && #this.id.startsWith('00g')].size() == 1", &ev));
        assert!(m("event.target.^[type eq 'UserGroup'].displayName eq 'Sales'", &ev));
        assert!(m("event.target.^[type eq 'Nope'] eq null", &ev));
        let two_users = with(&[(
            "/target",
            json!([
                target("User", "00u1", "a", "A"),
                target("UserGroup", "00g1", "g", "G"),
                target("User", "00u2", "b", "B")
            ]),
        )]);
        assert!(m("event.target.^[type eq 'User'].id eq '00u1'", &two_users));
        assert!(m("event.target.$[type eq 'User'].id eq '00u2'", &two_users));
        assert!(m("event.target.$[type eq 'Nope'] eq null", &two_users));
        // `event` inside a selection is still the whole event.
        assert!(!m("event.target.?[id eq event.actor.id].size() > 0", &ev));
        assert!(m("event.target.?[id eq event.actor.id].size() > 0", &with(&[("/target/0/id", json!("00uadmin1"))])));
        // The selection predicate must be a boolean for every element.
        assert!(!m("event.target.?[#this].size() > 0", &ev));
        assert!(m("event.securityContext.?[true].size() eq 0", &json!({"securityContext": []})));
        // size() on strings counts characters, on objects entries.
        assert!(m("event.actor.displayName.size() == 5", &ev));
        assert!(m("event.actor.displayName.size() == 3", &with(&[("/actor/displayName", json!("Zoë"))])));
        assert!(m("event.actor.size() == 4", &ev));
        assert!(m("''.isEmpty() && !'x'.isEmpty()", &ev));
    }

    #[test]
    fn indexing() {
        let ev = event();
        assert!(m("event.target[0].type eq 'User'", &ev));
        assert!(m("event.target[1]['displayName'] eq 'Sales'", &ev));
        assert!(!m("event.target[2].type eq null", &ev));
        assert!(!m("event.target[-1].type eq null", &ev));
        assert!(m("event['eventType'] eq 'group.user_membership.add'", &ev));
        assert!(m("event['no such key'] eq null", &ev));
        assert!(m("event.target.?[type eq 'UserGroup'][0].id eq '00g1sales'", &ev));
    }

    #[test]
    fn comparisons() {
        let ev = event();
        assert!(m("event.target.size() eq 2.0", &ev));
        assert!(m("1 == 1.0 && 1 != 2 && -1 < 0 && 1.5 > 1 && 2e0 == 2", &ev));
        assert!(m("event.target.size() >= 2 && event.target.size() <= 2 && event.target.size() lt 3", &ev));
        assert!(m("event.target.size() gt 1 && event.target.size() ge 2 && event.target.size() le 2", &ev));
        assert!(m("18446744073709551615 > 9223372036854775807", &ev));
        assert!(m("'a' < 'b' && 'B' < 'a' && event.eventType > 'group'", &ev));
        // Java orders strings by UTF-16 code unit: U+FF61 sorts after U+1F600's high surrogate.
        assert!(m("'\u{ff61}' > '\u{1f600}'", &ev));
        // Different kinds are unequal and unordered.
        assert!(m("event.target.size() ne '2'", &ev));
        assert!(!m("event.target.size() > '1'", &ev));
        assert!(!m("event.target.size() <= '1'", &ev));
        assert!(!m("event.securityContext.isProxy >= event.securityContext.isProxy", &ev));
        assert!(!m("event.client < 1", &ev));
        assert!(!m("event.actor > 'a'", &ev));
        assert!(m("true eq true && null eq null && false ne null", &ev));
        assert!(m("event.securityContext.isProxy eq false", &ev));
        // Strings compare exactly, case-sensitively.
        assert!(!m("event.outcome.result eq 'success'", &ev));
        assert!(!m("event.outcome.result eq 'SUCCESS '", &ev));
        // Composite values compare by content.
        assert!(m("event.actor eq event.actor && event.target eq event.target", &ev));
        assert!(m("event.target.?[true] eq event.target", &ev));
        assert!(!m("event.actor eq event.target", &ev));
    }

    #[test]
    fn strings_and_methods() {
        let ev = event();
        assert!(m("'it''s' eq \"it's\"", &ev));
        assert!(m("\"say \"\"hi\"\"\" eq 'say \"hi\"'", &ev));
        assert!(m("'日本語'.contains('本') && '日本語'.startsWith('日') && '日本語'.endsWith('語')", &ev));
        assert!(m("event.actor.alternateId.endsWith('@example.org')", &ev));
        assert!(m("event.actor.alternateId.startsWith('admin@')", &ev));
        assert!(m("event.outcome.result.toLowerCase() eq 'success'", &ev));
        assert!(m("event.actor.displayName.toUpperCase() == 'ADMIN'", &ev));
        assert!(!m("event.actor.displayName.contains('admin')", &ev));
        assert!(!m("event.actor.displayName.contains(1)", &ev));
        assert!(m("event.debugContext.debugData.changedAttributes.contains('email')", &ev));
        let ids = with(&[("/debugContext/debugData", json!({"targetEventHookIds": ["who1", "who2"], "n": [1, 2]}))]);
        assert!(m("event.debugData.targetEventHookIds.contains('who2')", &ids));
        assert!(!m("event.debugData.targetEventHookIds.contains('who')", &ids));
        assert!(m("event.debugData.n.contains(1.0)", &ids));
        assert!(m("event.target.?[type eq 'User'].contains(event.target[0])", &ev));
    }

    #[test]
    fn unterminated_strings() {
        assert_err("event.outcome.result eq 'SUCCESS", 24, "unterminated string");
        assert_err("event.outcome.result eq \"SUCCESS", 24, "unterminated string");
        assert_err("event.outcome.result eq 'it''s", 24, "unterminated string");
        assert_err("'", 0, "unterminated string");
    }

    #[test]
    fn unknown_operators() {
        assert_err("event.outcome.result = 'SUCCESS'", 21, "unknown operator '='");
        assert_err("event.outcome.result === 'SUCCESS'", 21, "unknown operator '==='");
        assert_err("event.outcome.result <> 'SUCCESS'", 21, "unknown operator '<>'");
        assert_err("event.outcome.result eq 'x' &&& true", 28, "unknown operator '&&&'");
        assert_err("event.outcome.result == = 'x'", 24, "missing operand before '='");
        assert_err("event.outcome.result equals 'SUCCESS'", 21, "unknown operator 'equals'");
        assert_err("event.outcome.result matches 'S.*'", 21, "unknown operator 'matches'");
        assert_err("event.outcome.result eq 'A' & event.eventType eq 'x'", 28, "unknown operator '&'");
        assert_err("event.outcome.result eq 'A' | true", 28, "unknown operator '|'");
        assert_err("event.outcome.result =~ 'x'", 21, "unknown operator '=~'");
        assert_err("event.target.size() + 1 > 2", 20, "arithmetic is not supported");
        assert_err("(event.outcome.result = 'x')", 22, "unknown operator '='");
        assert_err("event.target.?[type = 'User'].size() > 0", 20, "unknown operator '='");
        assert_err("true ? true : false", 5, "unknown operator '?'");
        assert_err("event.outcome.result ! 'x'", 21, "unknown operator '!'");
    }

    #[test]
    fn missing_operands() {
        assert_err("event.outcome.result eq", 23, "missing operand after 'eq'");
        assert_err("event.outcome.result ==   ", 26, "missing operand after '=='");
        assert_err("&& event.outcome.result eq 'x'", 0, "missing operand before '&&'");
        assert_err("event.outcome.result eq 'x' &&", 30, "missing operand after '&&'");
        assert_err("event.outcome.result eq 'x' && || true", 31, "missing operand before '||'");
        assert_err("eq 'x'", 0, "missing operand before 'eq'");
        assert_err("!", 1, "missing operand after '!'");
        assert_err("()", 1, "missing operand before ')'");
        assert_err("event.outcome.result eq ()", 25, "missing operand before ')'");
        assert_err("event.target.?[]", 15, "empty selection");
        assert_err("event.outcome.reason.contains(,)", 30, "missing operand before ','");
        assert_err("event.outcome.reason.contains('a',)", 34, "missing operand before ')'");
        assert_err("event.", 6, "expected a property name, a method call or a selection after '.', found end of input");
        assert_err("event.target.(x)", 13, "after '.', found '('");
        assert_err("event.target?[type eq 'x'].size() > 0", 12, "missing '.'");
    }

    #[test]
    fn unclosed_groups() {
        assert_err("(event.outcome.result eq 'x'", 28, "expected ')' to close the '(' at 0");
        assert_err("(event.outcome.result eq 'x' 'y')", 29, "expected ')' to close the '(' at 0, found 'y'");
        assert_err("((true)", 7, "expected ')' to close the '(' at 0");
        assert_err("event.target.?[type eq 'User'", 29, "expected ']' to close the selection started at 12");
        assert_err("event.target.?[type eq 'User').size() > 0", 29, "close the selection started at 12, found ')'");
        assert_err("event.target.?[type eq 'User' && (id eq 'x']", 43, "expected ')' to close the '(' at 33");
        assert_err(
            "event.outcome.reason.contains('X'",
            33,
            "expected ')' to close the arguments of 'contains' started at 29",
        );
        assert_err("event.target[0 eq null", 22, "expected ']' to close the index started at 12");
        assert_eq!(
            err("event.target.?[type eq 'User'").to_string(),
            "at position 29: expected ']' to close the selection started at 12"
        );
    }

    #[test]
    fn unknown_methods_and_wrong_arity() {
        assert_err("event.outcome.reason.includes('X')", 21, "unknown method 'includes()'");
        assert_err("event.target.length() > 0", 13, "unknown method 'length()'");
        assert_err("event.target.Size() > 0", 13, "unknown method 'Size()'");
        assert_err("event.target.?[name.matches('x')].size() > 0", 20, "unknown method 'matches()'");
        assert_err("event.target.size(1) > 0", 13, "'size()' takes no arguments, got 1");
        assert_err("event.outcome.reason.contains()", 21, "'contains()' takes one argument, got 0");
        assert_err("event.outcome.reason.contains('a', 'b')", 21, "takes one argument, got 2");
    }

    #[test]
    fn paths_must_start_with_event() {
        assert_err("outcome.result eq 'SUCCESS'", 0, "a path must start with 'event'");
        assert_err("Event.outcome.result eq 'SUCCESS'", 0, "case-sensitive");
        assert_err("event.outcome.result eq 'x' && actor.id eq 'y'", 31, "starts with 'actor'");
        assert_err("event.outcome.result eq result", 24, "starts with 'result'");
        assert_err("#this.id eq 'x'", 0, "'#this' can only be used inside a selection");
        assert_err("event.target.?[#root.x eq 1].size() > 0", 15, "unknown variable '#root'");
        // ...but bare names are the element's properties inside a selection.
        assert!(Expression::parse("event.target.?[type eq 'x' && #this.id eq 'y'].size() > 0").is_ok());
    }

    #[test]
    fn trailing_input() {
        assert_err("event.outcome.result eq 'x' 'y'", 28, "unexpected 'y' after a complete expression");
        assert_err("event.outcome.result eq 'x')", 27, "unexpected ')' without a matching '('");
        assert_err("event.outcome.result eq 'x' ]", 28, "unexpected ']' without a matching '['");
        assert_err("true true", 5, "unexpected 'true' after a complete expression");
        assert_err("true, false", 4, "unexpected ','");
        assert_err("event.target.size() eq 1 eq true", 25, "comparisons cannot be chained");
        assert_err("event.outcome.result eq 'x' ;", 28, "unexpected character ';'");
    }

    #[test]
    fn statically_wrong_comparisons_and_properties() {
        assert_err("event.target.?[type eq 'User'] > 0", 0, "'>' compares two numbers or two strings");
        assert_err("0 lt event.target.?[type eq 'User']", 5, "compare its size");
        assert_err("event.actor.id >= null", 18, "but this is null");
        assert_err("event.actor.id.startsWith('00u') > 1", 0, "but this is a boolean");
        assert_err("event.target.?[type eq 'User'].size > 0", 31, "has no property 'size'; did you mean 'size()'?");
        assert_err("event.target.?[type eq 'User'].id eq 'x'", 31, "has no property 'id'");
        assert_err("event.actor.id eq 00u123", 18, "invalid number '00u123'; text values must be quoted");
        assert_err("event.outcome.result eq SUCCESS", 24, "text values must be quoted, as in 'SUCCESS'");
        // `eq` between different kinds is allowed (and false), ordering of unknown values too.
        assert!(Expression::parse("event.target.?[type eq 'User'] eq null").is_ok());
        assert!(Expression::parse("event.actor.id > 'a' && event.target.size()>0and true").is_ok());
    }

    #[test]
    fn empty_expressions() {
        assert_err("", 0, "empty expression");
        assert_err("   \n\t ", 0, "empty expression");
    }

    #[test]
    fn non_boolean_expressions_are_rejected() {
        assert_err("'SUCCESS'", 0, "the expression must be a boolean condition, but this is a string");
        assert_err("42", 0, "but this is a number");
        assert_err("  -1.5", 2, "but this is a number");
        assert_err("null", 0, "but this is null");
        assert_err("event", 0, "the whole event");
        assert_err("event.outcome.result", 0, "a property value");
        assert_err("event.securityContext.isProxy", 0, "a property value");
        assert_err("(event.outcome.result)", 0, "a property value");
        assert_err("event.target[0]", 0, "a property value");
        assert_err("event.target.?[type eq 'User']", 0, "a selection, which is a list");
        assert_err("event.target.^[type eq 'User']", 0, "a selected element");
        assert_err("event.target.size()", 0, "a number");
        assert_err("event.actor.displayName.toLowerCase()", 0, "a string");
        assert_err("event.outcome.result eq 'x' && event.actor.id", 31, "each side of '&&'");
        assert_err("event.actor.id || true", 0, "each side of '||'");
        assert_err("!event.outcome.result eq 'SUCCESS'", 1, "what follows '!'");
        assert_err("not 'x'", 4, "what follows '!'");
        assert_err("event.target.?[displayName].size() > 0", 15, "a selection condition");
        // Booleans, comparisons, boolean methods and `#this` (whose type is unknown) are fine.
        for ok in ["true", "(false)", "!true", "'a'.isEmpty()", "event.target.?[#this].size() > 0"] {
            assert!(Expression::parse(ok).is_ok(), "{ok:?}");
        }
    }

    #[test]
    fn positions_count_characters_not_bytes() {
        let input = "event.actor.displayName eq 'Zoë' && event.outcome.result = 'x'";
        assert_err(input, 57, "unknown operator '='");
        assert_err("'日本' ~ 'x'", 5, "unknown operator '~'");
        assert_err("event.actor.名前 eq 'x'", 12, "found '名'");
        assert_err("'🙂🙂' eq 'x' && ünknown", 15, "unexpected character 'ü'");
        assert_err("'é🙂' eq 'é", 8, "unterminated string");
    }

    #[test]
    fn length_and_depth_limits() {
        let long = format!("{}true", "true && ".repeat(MAX_EXPRESSION_LEN / 8));
        assert_err(&long, MAX_EXPRESSION_LEN, "too long");
        // Multi-byte text: the position is the first character that does not fit.
        let wide = format!("'{}' eq 'x'", "é".repeat(2100));
        assert_err(&wide, 2049, "too long");
        let fits = format!("{}true", "true && ".repeat(MAX_EXPRESSION_LEN / 8 - 1));
        assert!(parse(&fits).matches(&event()));

        let nested = |n: usize| format!("{}true{}", "(".repeat(n), ")".repeat(n));
        assert!(parse(&nested(MAX_DEPTH)).matches(&event()));
        assert_err(&nested(MAX_DEPTH + 1), MAX_DEPTH, "nested too deeply");
        let negated = |n: usize| format!("{}true", "!".repeat(n));
        assert!(parse(&negated(MAX_DEPTH)).matches(&event()));
        assert_err(&negated(MAX_DEPTH + 1), MAX_DEPTH, "nested too deeply");
        assert_err(&format!("{}true", "!".repeat(2000)), MAX_DEPTH, "nested too deeply");
        assert_err(&format!("{}true", "(".repeat(2000)), MAX_DEPTH, "nested too deeply");
        let selections = format!("event.target{} eq null", ".?[#this.x".repeat(MAX_DEPTH + 1));
        assert_err(&selections, 12 + 10 * MAX_DEPTH, "nested too deeply");
        // Long flat chains are not nesting and evaluate without deep recursion.
        let chain = format!("event{} eq null", ".a".repeat(2000));
        assert!(!parse(&chain).matches(&event()));
        let safe_chain = format!("event{} eq null", "?.a".repeat(1300));
        assert!(parse(&safe_chain).matches(&event()));
    }

    #[test]
    fn evaluation_is_bounded() {
        // Each level of nesting multiplies the work by the number of targets: 200^4 steps
        // unbounded. The budget cuts it off and the event does not match.
        let nested = "event.target.?[event.target.?[event.target.?[event.target.?[true].size() > 0].size() > 0]\
                      .size() > 0].size() > 0";
        let big = with(&[("/target", Value::Array(vec![target("User", "00u1", "a", "A"); 200]))]);
        let started = std::time::Instant::now();
        assert!(!m(nested, &big));
        assert!(started.elapsed() < std::time::Duration::from_secs(5));
        // The same expression on a normal event is well within budget.
        assert!(m(nested, &event()));
        // Long strings cost in proportion to their length.
        let long_reason = with(&[("/outcome/reason", json!("x".repeat(10_000_000)))]);
        assert!(!m("event.target.?[event.outcome.reason.toUpperCase().contains('Y')].size() >= 0", &long_reason));
    }

    #[test]
    fn api_details() {
        let source = "event.outcome.result eq 'SUCCESS'";
        let expr = parse(source);
        assert_eq!(expr.source(), source);
        assert_eq!(expr.to_string(), source);
        assert_eq!(source.parse::<Expression>(), Ok(expr.clone()));
        assert_eq!(expr, parse(source));
        assert_ne!(expr, parse("event.outcome.result eq 'FAILURE'"));
        let e = err("event.outcome.result = 'x'");
        assert!(e.to_string().starts_with("at position 21: unknown operator '='"));
        let boxed: Box<dyn std::error::Error> = Box::new(e);
        assert!(boxed.to_string().contains("position 21"));
    }

    /// Tiny xorshift so the fuzz loop needs no extra dependency and is reproducible.
    struct Rng(u64);

    impl Rng {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            self.0
        }

        fn below(&mut self, n: usize) -> usize {
            usize::try_from(self.next() % u64::try_from(n.max(1)).unwrap_or(1)).unwrap_or(0)
        }

        fn pick<'a>(&mut self, items: &[&'a str]) -> &'a str {
            items.get(self.below(items.len())).copied().unwrap_or("")
        }
    }

    #[test]
    fn random_and_mutated_inputs_never_panic() {
        const SEEDS: [&str; 14] = [
            "event.target.?[type eq 'UserGroup' && displayName eq 'Sales'].size() > 0",
            "event.target.?[type eq 'UserGroup'].size()>0 && event.target.?[displayName eq 'Sales'].size()>0",
            "event.target.?[type eq 'User' && id eq '00u1abc'].size()>0 && \
             event.target.?[type eq 'UserGroup' && displayName eq 'Admin'].size()> 0",
            "event.target.?[type eq 'AppInstance' && alternateId eq 'My Bookmark App'].size()> 0",
            "event.debugData.changedAttributes.contains('email') || event.debugData.changedAttributes.contains('manager')",
            "event.outcome.result eq 'SUCCESS'",
            "event.actor.alternateId eq 'admin@example.org' && event.outcome.result eq 'FAILURE'",
            "event.outcome.reason.contains('SECURITY_QUESTION')",
            "event.eventType eq 'user.session.end' && event.actor.id ne '00u1abc'",
            "event.target.^[#this.id.startsWith('00u')]?.displayName.toLowerCase() eq 'lee chen'",
            "!(event.target[0]['type'] == \"User\") or event.target.$[true].id != null",
            "event.debugData.n.contains(-1.5e3) and event.actor.size() >= 4",
            "'日本''語' < 'x🙂' && event.target.?[event.target.?[true].isEmpty()].size() le 0",
            "not (event.outcome?.reason?.endsWith('X') eq null)",
        ];
        const FRAGMENTS: [&str; 48] = [
            "(",
            ")",
            "[",
            "]",
            ".?[",
            ".^[",
            ".$[",
            "?.",
            ".",
            ",",
            "'",
            "\"",
            "''",
            "&&",
            "||",
            "!",
            " eq ",
            " ne ",
            "==",
            "!=",
            ">",
            "<=",
            " and ",
            " or ",
            " not ",
            "event",
            "#this",
            "#",
            ".size()",
            ".contains('a')",
            ".isEmpty()",
            ".toUpperCase()",
            "é",
            "日本",
            "🙂",
            "\u{0}",
            "-",
            "1.5",
            "e9",
            "99999999999999999999999",
            "1e999",
            "null",
            "true",
            "type",
            " ",
            "\n",
            "$",
            "^",
        ];
        let events = [
            event(),
            with(&[("/outcome/reason", json!("SECURITY_QUESTION")), ("/target", Value::Null)]),
            with(&[("/debugContext/debugData", json!({"n": [1, -1500.0], "changedAttributes": ["email"]}))]),
            json!({"target": [null, 1, "x", [], {}, {"type": "User", "id": null}], "outcome": "SUCCESS"}),
            Value::Null,
        ];
        let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
        let mut parsed_ok = 0;
        for round in 0..3000 {
            let mut chars: Vec<char> = if round % 4 == 3 { Vec::new() } else { rng.pick(&SEEDS).chars().collect() };
            for _ in 0..=rng.below(4) {
                let at = rng.below(chars.len() + 1);
                match rng.below(4) {
                    0 => {
                        let end = (at + 1 + rng.below(6)).min(chars.len());
                        if at < end {
                            chars.drain(at..end);
                        }
                    }
                    1 => {
                        let end = (at + rng.below(12)).min(chars.len());
                        let copy: Vec<char> = chars.get(at..end).unwrap_or(&[]).to_vec();
                        let to = rng.below(chars.len() + 1);
                        chars.splice(to..to, copy);
                    }
                    _ => {
                        let fragment = rng.pick(&FRAGMENTS);
                        chars.splice(at..at, fragment.chars());
                    }
                }
            }
            let input: String = chars.iter().collect();
            match Expression::parse(&input) {
                Ok(expr) => {
                    parsed_ok += 1;
                    assert_eq!(expr.source(), input);
                    for ev in &events {
                        let _ = expr.matches(ev);
                    }
                }
                Err(e) => {
                    assert!(e.position <= chars.len(), "{input:?}: position {} out of range", e.position);
                    assert!(!e.message.is_empty());
                }
            }
        }
        // The mutations are mild enough that a fair share still parses and gets evaluated.
        assert!(parsed_ok > 200, "only {parsed_ok} inputs parsed");
    }

    #[test]
    fn the_fuzz_seeds_are_the_spec_examples_and_parse() {
        // The fuzz target starts from these files; each must parse, keep its source, and
        // evaluate against an event.
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fuzz/seeds/event_filter");
        let mut seeds: Vec<_> = std::fs::read_dir(&dir).expect("seed dir").flatten().map(|e| e.path()).collect();
        seeds.sort();
        assert_eq!(seeds.len(), 9, "one seed per example of the spec's filter section");
        for path in seeds {
            let text = std::fs::read_to_string(&path).expect("seed");
            let expr = Expression::parse(&text).unwrap_or_else(|e| panic!("{}: {e:?}", path.display()));
            assert_eq!(expr.source(), text);
            let _ = expr.matches(&event());
        }
    }
}
