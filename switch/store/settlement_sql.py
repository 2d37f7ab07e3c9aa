"""The settlement store's SQL, written once for both engines (settlement.md): its tables,
the settlement of a date statement by statement, and what the store reads and writes
around it. :func:`settlement_sql` gives them in an engine's :class:`Dialect`; each
engine's ``settlement.py`` builds its own once, at import.

Settlement is set-based: one SQL statement a step over whole tables (candidates, what
the banks' files say of them, the verdicts, the sums per merchant, the postings), never
a Python loop per transaction, all in one transaction: a date is settled wholly or not
at all, and once settled its stored rows are what its files are written from.

Where the engines differ, the dialect says how: SQLite reads the journal attached as
``j`` and fixes some join orders (``CROSS JOIN``: each candidate looks its records up
by RRN; the other way round reads the records of every date up to this one);
PostgreSQL compares every text column byte by byte (``COLLATE "C"``), as SQLite does,
so the files come out in the same order, casts its sums back to BIGINT, and drops its
temporary tables at commit.
"""

from __future__ import annotations

from typing import Final

import msgspec

from switch.core import products
from switch.core.onus import REVERSAL_LEG
from switch.core.settlement import LedgerOrder, PayoutLine, ReconLine, ReversalOrder
from switch.store.dialect import Dialect
from switch.store.settlement_port import CLEARING_COLUMNS

_kind: Final = products.kind_sql
"""The settlement's kind lists are the product table's (``switch.core.products``):
what is paid like a sale (``debit``), what returns money (``credit``), what cancels its
original (``cancels``), and every kind that settles."""


_UNKNOWN: Final = f"'{products.UNKNOWN_KIND}'"


def migrations(d: Dialect) -> tuple[str, ...]:
    """The store's migrations (SQLite applies them in turn; PostgreSQL, whose store came
    later, the first two at once, then the rest in turn)."""
    t, integer, real = d.text, d.integer, d.real
    return (
        f"""
    CREATE TABLE business_day (
        business_date {t} PRIMARY KEY,     -- YYYY-MM-DD
        opened_at {real} NOT NULL,
        closed_at {real},                     -- from then on the next date is open
        forced {d.flag} NOT NULL DEFAULT {d.false},  -- closed by an operator before its cut-off
        settled_at {real},
        files_at {real}                       -- its payout and recon files last written
    );
    CREATE TABLE cutover (
        business_date {t} NOT NULL,
        bank {t} NOT NULL,
        code {t} NOT NULL,                 -- the bank's 39, or why none came
        at {real} NOT NULL,
        PRIMARY KEY (business_date, bank)
    );
    CREATE TABLE clearing_file (
        bank {t} NOT NULL,
        business_date {t} NOT NULL,
        name {t} NOT NULL,
        status {t} NOT NULL,               -- accepted, rejected
        reason {t},
        records {integer} NOT NULL,
        read_at {real} NOT NULL,
        PRIMARY KEY (bank, business_date)
    );
    CREATE TABLE clearing_record (
        bank {t} NOT NULL,
        file_date {t} NOT NULL,
        mti {t} NOT NULL,
        mti_class {t} NOT NULL,            -- 02 the message itself, 04 its reversal
        processing_code {t} NOT NULL,
        stan {t} NOT NULL,
        transmission {t} NOT NULL,
        rrn {t} NOT NULL,
        amount {integer} NOT NULL,
        currency {t} NOT NULL,
        response_code {t} NOT NULL,
        auth_code {t} NOT NULL,
        terminal_id {t} NOT NULL,
        merchant_id {t} NOT NULL,
        masked_pan {t} NOT NULL,
        direction {t} NOT NULL
    );
    CREATE INDEX clearing_by_rrn ON clearing_record (rrn, bank, file_date);
    CREATE INDEX clearing_by_file ON clearing_record (file_date, bank);
    CREATE TABLE settlement_item (          -- each transaction examined, as last decided
        rrn {t} PRIMARY KEY,
        bank {t} NOT NULL,
        kind {t} NOT NULL,                 -- sale, void, refund; unknown: the bank's only
        txn_date {t} NOT NULL,             -- its own business date
        merchant_id {t} NOT NULL,
        terminal_id {t} NOT NULL,
        masked_pan {t} NOT NULL,
        original_rrn {t},
        switch_fen {integer},
        bank_fen {integer},
        paid_fen {integer},
        category {t} NOT NULL,
        action {t} NOT NULL,
        state {t} NOT NULL,                -- held (looked for again), final
        settled_on {t} NOT NULL            -- the settlement that decided it last
    );
    CREATE INDEX item_held ON settlement_item (state) WHERE state = 'held';
    CREATE TABLE recon_line (
        business_date {t} NOT NULL,
        category {t} NOT NULL,
        bank {t} NOT NULL,
        rrn {t} NOT NULL,
        terminal_id {t} NOT NULL,
        merchant_id {t} NOT NULL,
        masked_pan {t} NOT NULL,
        switch_fen {integer},
        bank_fen {integer},
        action {t} NOT NULL
    );
    CREATE INDEX recon_by_date ON recon_line (business_date);
    CREATE TABLE payout (
        business_date {t} NOT NULL,
        merchant_id {t} NOT NULL,
        account {t} NOT NULL,
        sales_count {integer} NOT NULL,
        sales_fen {integer} NOT NULL,
        refunds_count {integer} NOT NULL,
        refunds_fen {integer} NOT NULL,
        fees_fen {integer} NOT NULL,
        held_fen {integer} NOT NULL,
        carried_in_fen {integer} NOT NULL,
        net_fen {integer} NOT NULL,
        payout_fen {integer} NOT NULL,
        carried_out_fen {integer} NOT NULL,
        PRIMARY KEY (business_date, merchant_id)
    );
    CREATE INDEX payout_by_merchant ON payout (merchant_id, business_date);
    CREATE TABLE ledger_entry (             -- one line of a posting; a posting balances
        id {d.row_id},
        business_date {t} NOT NULL,
        posting {t} NOT NULL,              -- what and for whom, e.g. sales:icbc:M1
        account {t} NOT NULL,
        debit_fen {integer} NOT NULL,
        credit_fen {integer} NOT NULL
    );
    CREATE INDEX ledger_by_account ON ledger_entry (account);
    CREATE INDEX ledger_by_date ON ledger_entry (business_date);
    CREATE TABLE reversal_order (           -- reversals settlement decided on
        rrn {t} PRIMARY KEY,
        bank {t} NOT NULL,
        business_date {t} NOT NULL,
        reason {t} NOT NULL,
        known {d.flag} NOT NULL,             -- false: a bank's record the switch never sent
        mti {t} NOT NULL DEFAULT '',
        processing_code {t} NOT NULL DEFAULT '',
        stan {t} NOT NULL DEFAULT '',
        transmission {t} NOT NULL DEFAULT '',
        amount {integer} NOT NULL DEFAULT 0,
        currency {t} NOT NULL DEFAULT '',
        terminal_id {t} NOT NULL DEFAULT '',
        merchant_id {t} NOT NULL DEFAULT '',
        masked_pan {t} NOT NULL DEFAULT '',
        handed_at {real}                      -- queued in the journal's store-and-forward
    );
    CREATE INDEX reversal_order_pending ON reversal_order (handed_at) WHERE handed_at IS NULL;
    """,
        # 2: what a settlement reads of earlier dates, found without reading all of them:
        # the matched items of the date (its status) and the merchants carrying a balance.
        """
    CREATE INDEX item_by_settlement ON settlement_item (settled_on);
    CREATE INDEX payout_carried ON payout (merchant_id, business_date)
        WHERE carried_out_fen != 0;
    """,
        # 3: the ledger's accounts named as settlement.md lists them (wallet.md's ledger
        # shares them): bank:<bank> is bank_clearing:<bank>, fees merchant_fee_income.
        """
    UPDATE ledger_entry SET account = 'bank_clearing:' || substr(account, 6)
        WHERE account LIKE 'bank:%';
    UPDATE ledger_entry SET account = 'merchant_fee_income' WHERE account = 'fees';
    """,
        # 4: stood-in sales examined again at each settlement while stip_pending (risk.md):
        # their items' state is ``stip`` (paid already, unlike a held one).
        """
    CREATE INDEX item_stip ON settlement_item (state) WHERE state = 'stip';
    """,
        # 5: on-us payments (wallet.md): each merchant's on-us part of a date's payout,
        # and the transfers settlement decided on the on-us ledger (fees, payouts, recon
        # corrections), handed to the ledger store after the settlement commits.
        f"""
    CREATE TABLE onus_payout (
        business_date {t} NOT NULL,
        merchant_id {t} NOT NULL,
        sales_fen {integer} NOT NULL,
        refunds_fen {integer} NOT NULL,
        fees_fen {integer} NOT NULL,
        PRIMARY KEY (business_date, merchant_id)
    );
    CREATE TABLE ledger_order (
        business_date {t} NOT NULL,        -- the transfer's key: the date as principal,
        request_id {t} NOT NULL,           -- the kind (fee, payout, recon, recon_loss)
        leg {t} NOT NULL,                  -- and the merchant or the RRN
        debit_account {t} NOT NULL,
        credit_account {t} NOT NULL,
        amount {integer} NOT NULL,
        kind {t} NOT NULL,
        rrn {t} NOT NULL,
        merchant_id {t} NOT NULL,
        handed_at {real},                     -- transferred on the ledger store
        PRIMARY KEY (business_date, request_id, leg)
    );
    CREATE INDEX ledger_order_pending ON ledger_order (handed_at) WHERE handed_at IS NULL;
    """,
    )


class SettlementSql(msgspec.Struct, frozen=True, kw_only=True):
    """The store's statements in one engine's form."""

    # business days
    closes: str
    first_open_date: str
    open_date: str
    close_date: str
    put_cutover: str
    cutovers: str
    unsettled_closed_dates: str
    settled_at: str
    closed_at: str
    # clearing files
    clearing_file: str
    clearing_file_status: str
    clear_records: str
    insert_record: str
    """One clearing record: bank, file date, MTI class, then ``CLEARING_COLUMNS``."""
    put_clearing_file: str
    """A file's status: bank, date, name, status, reason, records, when read."""
    clearing_files: str
    # settling a date
    date_to_settle: str
    mark_settled: str
    temp_tables: tuple[str, ...]
    drop_temp_tables: tuple[str, ...]
    put_terms: str
    put_own_merchant: str
    settle_steps: tuple[str, ...]
    """Each statement of a date's settlement, in order, on the named parameters ``d``
    (the date), ``d_hold`` (the date ``hold`` dates before it) and ``hold``."""
    unbalanced: str
    mark_files_written: str
    payout_lines: str
    recon_lines: str
    # reversals decided
    pending_reversal_orders: str
    mark_order_handed: str
    # what the operator reads
    date_status: str
    category_counts: str
    payout_sums: str
    reversals_queued: str
    latest_closed_date: str
    ledger_balances: str
    account_balance: str
    ledger_totals: str
    # the on-us ledger's transfers decided
    pending_ledger_orders: str
    mark_ledger_order_handed: str


_FILE_COLUMNS: Final = "bank, business_date, name, status, reason, records, read_at"
_TEMP_TABLES: Final = (
    ("terms", "merchant_id {t} PRIMARY KEY, account {t}, mdr_bps {i}, fee_min {i}, fee_cap {i}"),
    # The switch's own merchants (settlement.md: [credit] own_merchant_id...): matched,
    # never paid out; their pages post them to the ledger.
    ("own_merchant", "merchant_id {t} PRIMARY KEY"),
    ("cand", """
        rrn {t} PRIMARY KEY, bank {t}, kind {t}, txn_date {t}, merchant_id {t},
        terminal_id {t}, masked_pan {t}, amount {i}, original_rrn {t}, stands {f}
    """),
    ("seen", "rrn {t} PRIMARY KEY, amount02 {i}, date02 {t}, has04 {f}"),
    ("decided", """
        rrn {t} PRIMARY KEY, bank {t}, kind {t}, txn_date {t}, merchant_id {t},
        terminal_id {t}, masked_pan {t}, original_rrn {t}, switch_fen {i},
        bank_fen {i}, category {t}, action {t}, paid_fen {i}
    """),
    ("counted", """
        rrn {t} PRIMARY KEY, bank {t}, merchant_id {t}, role {t}, paid_fen {i}, fee {i}
    """),
    ("stip", """
        rrn {t} PRIMARY KEY, own_date {f}, advice {t}, acc_date {t}, stands {f}
    """),
    ("merchant_day", """
        merchant_id {t} PRIMARY KEY, account {t}, sales_count {i}, sales_fen {i},
        refunds_count {i}, refunds_fen {i}, fees_fen {i}, held_fen {i}, carried_in_fen {i}
    """),
)  # fmt: skip
"""A settlement's working tables: name, and columns ({t}ext, {i}nteger, {f}lag)."""


def settlement_sql(d: Dialect) -> SettlementSql:
    """The store's statements in the dialect ``d``."""
    sql = d.sql
    return SettlementSql(
        closes=sql(
            "SELECT business_date, closed_at, forced FROM business_day "
            "WHERE closed_at IS NOT NULL ORDER BY closed_at"
        ),
        first_open_date=sql(
            "SELECT min(business_date) AS d FROM business_day WHERE closed_at IS NULL"
        ),
        open_date=sql(
            "INSERT INTO business_day (business_date, opened_at) VALUES (?, ?) "
            "ON CONFLICT (business_date) DO NOTHING"
        ),
        close_date=sql(
            "UPDATE business_day SET closed_at = ?, forced = ? "
            "WHERE business_date = ? AND closed_at IS NULL"
        ),
        put_cutover=sql(
            "INSERT INTO cutover (business_date, bank, code, at) VALUES (?, ?, ?, ?) "
            "ON CONFLICT (business_date, bank) DO UPDATE SET code = EXCLUDED.code, "
            "at = EXCLUDED.at"
        ),
        cutovers=sql("SELECT bank, code FROM cutover WHERE business_date = ?"),
        unsettled_closed_dates=sql(
            "SELECT business_date FROM business_day WHERE closed_at IS NOT NULL "
            "AND settled_at IS NULL ORDER BY business_date"
        ),
        settled_at=sql("SELECT settled_at FROM business_day WHERE business_date = ?"),
        closed_at=sql("SELECT closed_at FROM business_day WHERE business_date = ?"),
        clearing_file=sql(
            f"SELECT {_FILE_COLUMNS} FROM clearing_file WHERE bank = ? AND business_date = ?"
        ),
        clearing_file_status=sql(
            "SELECT status FROM clearing_file WHERE bank = ? AND business_date = ?"
        ),
        clear_records=sql("DELETE FROM clearing_record WHERE bank = ? AND file_date = ?"),
        insert_record=sql(
            "INSERT INTO clearing_record (bank, file_date, mti_class, "
            f"{', '.join(CLEARING_COLUMNS)}) "
            f"VALUES (?, ?, ?, {', '.join('?' * len(CLEARING_COLUMNS))})"
        ),
        put_clearing_file=sql(
            f"INSERT INTO clearing_file ({_FILE_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?) "
            "ON CONFLICT (bank, business_date) DO UPDATE SET name = EXCLUDED.name, "
            "status = EXCLUDED.status, reason = EXCLUDED.reason, "
            "records = EXCLUDED.records, read_at = EXCLUDED.read_at"
        ),
        clearing_files=sql(
            f"SELECT {_FILE_COLUMNS} FROM clearing_file WHERE business_date = ? ORDER BY bank"
        ),
        date_to_settle=sql(
            "SELECT closed_at, settled_at FROM business_day WHERE business_date = ?"
        ),
        mark_settled=sql("UPDATE business_day SET settled_at = ? WHERE business_date = ?"),
        temp_tables=_temp_tables(d),
        drop_temp_tables=tuple(
            d.drop_temp_after.format(name) for name, _ in _TEMP_TABLES if d.drop_temp_after
        ),
        put_terms=sql("INSERT INTO terms VALUES (?, ?, ?, ?, ?)"),
        put_own_merchant=sql("INSERT INTO own_merchant VALUES (?) ON CONFLICT DO NOTHING"),
        settle_steps=tuple(sql(step) for step in _settle_steps(d)),
        unbalanced=sql(
            f"SELECT posting, {d.whole.format('(sum(debit_fen) - sum(credit_fen))')} AS off "
            "FROM ledger_entry WHERE business_date = :d GROUP BY posting "
            "HAVING sum(debit_fen) != sum(credit_fen) LIMIT 1"
        ),
        mark_files_written=sql("UPDATE business_day SET files_at = ? WHERE business_date = ?"),
        payout_lines=sql(
            f"SELECT {', '.join(PayoutLine.__struct_fields__)} FROM payout "
            "WHERE business_date = ? ORDER BY merchant_id"
        ),
        recon_lines=sql(
            f"SELECT {', '.join(ReconLine.__struct_fields__)} FROM recon_line "
            "WHERE business_date = ? ORDER BY rrn, category, terminal_id"
        ),
        pending_reversal_orders=sql(
            f"SELECT {', '.join(ReversalOrder.__struct_fields__)} FROM reversal_order "
            "WHERE handed_at IS NULL ORDER BY business_date, rrn"
        ),
        mark_order_handed=sql("UPDATE reversal_order SET handed_at = ? WHERE rrn = ?"),
        date_status=sql(
            "SELECT closed_at, forced, settled_at, files_at FROM business_day "
            "WHERE business_date = ?"
        ),
        # A sale and its void paid by the same settlement cancel out (step 7): the
        # status shows both as ``cancelled``, as the payouts treat them.
        category_counts=sql(
            "WITH pair AS (SELECT v.rrn AS void_rrn, s.rrn AS sale_rrn FROM settlement_item v"
            " JOIN settlement_item s ON s.rrn = v.original_rrn"
            f" WHERE v.settled_on = :d AND {_kind('v.kind', counts='cancels')}"
            " AND v.action = 'paid'"
            f"  AND s.settled_on = :d AND {_kind('s.kind', counts='debit')} AND s.action = 'paid'),"
            " cancelled (rrn) AS (SELECT void_rrn FROM pair UNION SELECT sale_rrn FROM pair) "
            "SELECT category, shown AS action, count(*) AS count, "
            f"{d.whole.format('sum(switch_fen)')} AS switch_fen, "
            f"{d.whole.format('sum(bank_fen)')} AS bank_fen FROM ("
            " SELECT category, CASE WHEN l.action = 'paid' AND l.rrn IN (SELECT rrn FROM cancelled)"
            "  THEN 'cancelled' ELSE l.action END AS shown, switch_fen, bank_fen FROM ("
            "  SELECT category, action, rrn, switch_fen, bank_fen FROM recon_line"
            "   WHERE business_date = :d"
            "  UNION ALL SELECT 'matched', action, rrn, switch_fen, bank_fen FROM settlement_item"
            "   WHERE settled_on = :d AND category = 'matched') AS l) AS lines "
            "GROUP BY category, shown ORDER BY category, shown"
        ),
        payout_sums=sql(
            "SELECT count(*) AS merchants, "
            + ", ".join(
                f"{d.whole.format(f'sum({column}_fen)')} AS {column}"
                for column in ("sales", "refunds", "fees", "payout", "carried_out", "held")
            )
            + " FROM payout WHERE business_date = ?"
        ),
        reversals_queued=sql("SELECT count(*) AS n FROM reversal_order WHERE business_date = ?"),
        latest_closed_date=sql(
            "SELECT max(business_date) AS d FROM business_day WHERE closed_at IS NOT NULL"
        ),
        ledger_balances=sql(_balances(d, "")),
        account_balance=sql(_balances(d, "WHERE account = ? ")),
        ledger_totals=sql(
            f"SELECT {d.whole.format('coalesce(sum(debit_fen), 0)')} AS debit, "
            f"{d.whole.format('coalesce(sum(credit_fen), 0)')} AS credit FROM ledger_entry"
        ),
        pending_ledger_orders=sql(
            f"SELECT {', '.join(LedgerOrder.__struct_fields__)} FROM ledger_order "
            "WHERE handed_at IS NULL ORDER BY business_date, rrn, request_id, leg"
        ),
        mark_ledger_order_handed=sql(
            "UPDATE ledger_order SET handed_at = ? "
            "WHERE business_date = ? AND request_id = ? AND leg = ?"
        ),
    )


def _balances(d: Dialect, where: str) -> str:
    return (
        f"SELECT account, {d.whole.format('sum(debit_fen)')} AS debit, "
        f"{d.whole.format('sum(credit_fen)')} AS credit "
        f"FROM ledger_entry {where}GROUP BY account ORDER BY account"
    )


def _temp_tables(d: Dialect) -> tuple[str, ...]:
    made: list[str] = []
    for name, columns in _TEMP_TABLES:
        if d.drop_temp_before:
            made.append(d.drop_temp_before.format(name))
        shown = columns.format(t=d.text, i=d.integer, f=d.flag)
        made.append(d.temp_table.format(name=name, columns=shown))
        if name == "decided":
            # The voids paid, by the sale they void: step 7 asks of each sale paid
            # whether one voids it (without this, a scan of every verdict for every sale).
            made.append(d.temp_index.format(
                name="decided_void_of", table="decided",
                definition=f"(original_rrn) WHERE {_kind('kind', counts='cancels')}"
                " AND action = 'paid'",
            ))  # fmt: skip
    return tuple(made)


_FEE: Final = """{least}(
    CASE WHEN t.fee_cap > 0 THEN t.fee_cap ELSE 9223372036854775807 END,
    {greatest}(t.fee_min, (d.paid_fen * t.mdr_bps + 5000) / 10000)
)"""
"""A sale's fee (settlement.md): its amount x bps / 10000 rounded half up (integer
division truncates), raised to the minimum, lowered to the cap (as MerchantTerms.fee)."""


def _postings(d: Dialect, source: str, key: str, *postings: tuple[str, str, str, str]) -> str:
    """One INSERT of ledger lines: for each row of ``source`` (one per ``key``) and
    each (posting, amount, debit account, credit account) whose amount is positive, a
    debit line and a credit line of that amount, under the posting's name."""
    lines = []
    for number, (posting, amount, debit, credit) in enumerate(postings):
        name = f"'{posting}:' || " + " || ':' || ".join(key.split(", "))
        for side, account, debit_fen, credit_fen in ((0, debit, amount, "0"),
                                                     (1, credit, "0", amount)):  # fmt: skip
            lines.append(
                f"SELECT {key}, {2 * number + side} AS line, {name} AS posting, "
                f"{account} AS account, {debit_fen} AS debit, {credit_fen} AS credit "
                f"FROM {source}_sums WHERE {amount} > 0"
            )
    # What the postings are made of: per bank and merchant, the date's paid sales and
    # refunds; per merchant, its payout row.
    # On-us payments are on merchant:<m> of the on-us ledger already (wallet.md): no
    # bank_clearing posting; their fees and their net leave that ledger (ledger_order),
    # so the payout posted here is the rest, and a negative rest (the on-us part paid
    # more than the whole) comes back from payouts.
    paid = "sum(CASE WHEN role = '{}' THEN paid_fen ELSE 0 END)"
    sums = {
        "counted": f"SELECT bank, merchant_id, {d.whole.format(paid.format('sale'))} AS sales_fen, "
        f"{d.whole.format(paid.format('refund'))} AS refunds_fen "
        f"FROM counted WHERE bank != '{products.LEDGER_BANK}' GROUP BY bank, merchant_id",
        "payout": "SELECT p.merchant_id, p.carried_in_fen, p.carried_out_fen, "
        "p.fees_fen - coalesce(o.fees_fen, 0) AS fees_fen, "
        "p.payout_fen - coalesce(o.sales_fen - o.refunds_fen - o.fees_fen, 0) AS payout_fen "
        "FROM payout p LEFT JOIN onus_payout o ON o.business_date = p.business_date "
        "AND o.merchant_id = p.merchant_id WHERE p.business_date = :d",
    }
    return (
        f"INSERT INTO ledger_entry (business_date, posting, account, debit_fen, credit_fen) "
        f"WITH {source}_sums AS ({sums[source]}) "
        f"SELECT :d, posting, account, debit, credit "
        f"FROM ({' UNION ALL '.join(lines)}) AS lines ORDER BY {key}, line"
    )


def _stip_postings(d: Dialect) -> str:
    true = d.true
    moves = (
        # (posting, which, amount, debit account, credit account)
        ("stip_fund", f"s.own_date = {true} AND x.category IN ('stip_pending', 'stip_loss') "
         "AND x.paid_fen > 0", "x.paid_fen", "'stip_receivable:' || x.bank",
         "'bank_clearing:' || x.bank"),
        ("stip_match", f"s.own_date != {true} AND x.category IN ('matched', 'timing') "
         "AND x.switch_fen > 0", "x.switch_fen", "'bank_clearing:' || x.bank",
         "'stip_receivable:' || x.bank"),
        ("stip_loss", f"x.category = 'stip_loss' AND x.switch_fen > 0 AND (s.own_date != {true} "
         "OR x.paid_fen > 0)", "x.switch_fen", "'stip_loss'", "'stip_receivable:' || x.bank"),
    )  # fmt: skip
    lines = []
    for number, (posting, which, amount, debit, credit) in enumerate(moves):
        name = f"'{posting}:' || x.bank || ':' || x.rrn"
        for side, account, debit_fen, credit_fen in ((0, debit, amount, "0"),
                                                     (1, credit, "0", amount)):  # fmt: skip
            lines.append(
                f"SELECT x.rrn AS rrn, {2 * number + side} AS line, {name} AS posting, "
                f"{account} AS account, {debit_fen} AS debit, {credit_fen} AS credit "
                f"FROM decided x JOIN stip s ON s.rrn = x.rrn WHERE {which}"
            )
    return (
        "INSERT INTO ledger_entry (business_date, posting, account, debit_fen, credit_fen) "
        f"SELECT :d, posting, account, debit, credit FROM ({' UNION ALL '.join(lines)}) "
        "AS lines ORDER BY rrn, line"
    )


def _settle_steps(d: Dialect) -> tuple[str, ...]:
    j, cross_join, ledger = d.journal, d.cross_join, d.ledger
    return (
        # 1. The candidates: the date's transactions that went to a bank (declined, timed
        #    out and reversed ones included: the bank may say otherwise), and the sales
        #    held by earlier dates, looked for again.
        f"""INSERT INTO cand
    SELECT rrn, bank, kind, business_date, merchant_id, terminal_id, pan_masked, amount,
           original_rrn, state = 'approved' AND reversed = {d.false}
    FROM {j}txn
    WHERE business_date = :d AND {_kind("kind", settled=True, destination="bank")}
      AND state IN ('approved', 'declined', 'no_answer', 'sending')
      AND stand_in IS NULL AND NOT (state = 'approved' AND bank_mti IS NULL)""",
        # 1o. On-us transactions (wallet.md): no bank, each compared with the ledger's
        #     posted transfers of its RRN (its own, less a terminal's reversal of it;
        #     settlement's own corrections, kind adjust, aside). The journal decides:
        #     matched when both agree, else ledger_mismatch, paid if it stands.
        f"""INSERT INTO decided
    SELECT rrn, bank, kind, txn_date, merchant_id, terminal_id, masked_pan, original_rrn,
           switch_fen, ledger_fen,
           CASE WHEN coalesce(switch_fen, 0) = coalesce(ledger_fen, 0) THEN 'matched'
                ELSE 'ledger_mismatch' END,
           CASE WHEN switch_fen IS NULL THEN 'not_paid' ELSE 'paid' END,
           switch_fen
    FROM (
        SELECT t.rrn, t.bank, t.kind, t.business_date AS txn_date, t.merchant_id,
               t.terminal_id, t.pan_masked AS masked_pan, t.original_rrn,
               CASE WHEN t.state = 'approved' AND t.reversed = {d.false} THEN t.amount END
                   AS switch_fen,
               (SELECT nullif(sum(CASE WHEN x.leg = '{REVERSAL_LEG}' THEN -x.posted_amount
                                       ELSE x.posted_amount END), 0)
                FROM {ledger}ledger_transfer x
                WHERE x.rrn = t.rrn AND x.rrn != '' AND x.state = 'posted'
                  AND x.kind != 'adjust') AS ledger_fen
        FROM {j}txn t
        WHERE t.business_date = :d AND {_kind("t.kind", settled=True, destination="ledger")}
    ) AS v""",
        # 1r. What corrects the ledger to the journal, for each ledger_mismatch: the
        #     difference, from the payment's debit account (its customer's: a wallet is
        #     debited at most to zero when handed over, recon_loss the rest) to the
        #     merchant, or back; recon_loss when the ledger has no payment to name one.
        f"""INSERT INTO ledger_order (business_date, request_id, leg, debit_account,
        credit_account, amount, kind, rrn, merchant_id)
    SELECT :d, 'recon', rrn, CASE WHEN gives THEN customer ELSE merchant END,
           CASE WHEN gives THEN merchant ELSE customer END,
           CASE WHEN diff < 0 THEN -diff ELSE diff END, 'adjust', rrn, merchant_id
    FROM (
        SELECT c.*, CASE WHEN pays THEN diff ELSE -diff END > 0 AS gives
        FROM (
            SELECT x.rrn, x.merchant_id, 'merchant:' || x.merchant_id AS merchant,
                   coalesce(x.switch_fen, 0) - coalesce(x.bank_fen, 0) AS diff,
                   {_kind("x.kind", counts="debit")} AS pays,
                   coalesce((SELECT min(p.debit_account) FROM {ledger}ledger_transfer p
                             WHERE p.rrn = CASE WHEN {_kind("x.kind", counts="debit")}
                                                THEN x.rrn ELSE x.original_rrn END
                               AND p.rrn != '' AND p.leg != '{REVERSAL_LEG}'
                               AND p.kind != 'adjust'
                               AND p.credit_account = 'merchant:' || x.merchant_id),
                            'recon_loss') AS customer
            FROM decided x WHERE x.category = 'ledger_mismatch'
        ) AS c
    ) AS g""",
        f"""INSERT INTO cand
    SELECT t.rrn, t.bank, t.kind, t.business_date, t.merchant_id, t.terminal_id, t.pan_masked,
           t.amount, t.original_rrn, t.state = 'approved' AND t.reversed = {d.false}
    FROM settlement_item s JOIN {j}txn t ON t.rrn = s.rrn
    WHERE s.state = 'held' AND t.business_date < :d AND t.stand_in IS NULL
    ON CONFLICT (rrn) DO NOTHING""",
        # 1s. Stood-in sales (risk.md), apart: paid with their own date's settlement
        #     whatever their advice's state, never switch_only, matched against the
        #     bank's file of the date their advice was accepted (D - 1 to D + 1 of it),
        #     looked for again while stip_pending. A void done in the switch (no bank
        #     message: its advice never sent, or refused) is no candidate; its sale does
        #     not stand.
        f"""INSERT INTO stip
    SELECT t.rrn, t.business_date = :d, coalesce(a.state, ''), a.accepted_date,
           t.state = 'approved' AND t.reversed = {d.false}
           AND NOT (t.voided = {d.true} AND a.state IN ('queued', 'cancelled', 'refused'))
    FROM {j}txn t JOIN {j}advice a ON a.rrn = t.rrn
    WHERE t.business_date = :d AND t.stand_in IS NOT NULL
    UNION
    SELECT t.rrn, {d.false}, coalesce(a.state, ''), a.accepted_date,
           t.state = 'approved' AND t.reversed = {d.false}
           AND NOT (t.voided = {d.true} AND a.state IN ('queued', 'cancelled', 'refused'))
    FROM settlement_item s JOIN {j}txn t ON t.rrn = s.rrn JOIN {j}advice a ON a.rrn = t.rrn
    WHERE s.state = 'stip' AND t.business_date < :d""",
        f"""INSERT INTO decided
    SELECT rrn, bank, kind, txn_date, merchant_id, terminal_id, masked_pan, original_rrn,
           switch_fen, bank_fen, category,
           CASE WHEN category IN ('stip_pending', 'stip_loss', 'timing') THEN 'paid'
                WHEN category = 'bank_only' THEN 'reversal_queued'
                WHEN switch_fen IS NULL THEN 'not_paid' ELSE 'paid' END,
           CASE WHEN own_date = {d.true} AND switch_fen IS NOT NULL THEN switch_fen END
    FROM (
        SELECT v.*, CASE
            WHEN switch_fen IS NULL THEN
                CASE WHEN bank_fen IS NOT NULL THEN 'bank_only' ELSE 'matched' END
            WHEN advice = 'refused' THEN 'stip_loss'
            WHEN advice != 'accepted' THEN 'stip_pending'
            WHEN bank_fen IS NOT NULL THEN
                CASE WHEN date02 != acc_date THEN 'timing' ELSE 'matched' END
            WHEN {d.days_between.format(":d", "acc_date")} >= :hold THEN 'stip_loss'
            ELSE 'stip_pending' END AS category
        FROM (
            SELECT t.rrn, t.bank, t.kind, t.business_date AS txn_date, t.merchant_id,
                   t.terminal_id, t.pan_masked AS masked_pan, t.original_rrn, s.own_date,
                   s.advice, s.acc_date,
                   CASE WHEN s.stands THEN t.amount END AS switch_fen,
                   (SELECT max(r.amount) FROM clearing_record r
                    WHERE r.rrn = t.rrn AND r.bank = t.bank AND r.mti_class = '02'
                      AND s.acc_date IS NOT NULL
                      AND r.file_date >= {d.day_before.format("s.acc_date")}
                      AND {d.days_between.format("r.file_date", "s.acc_date")} <= 1
                      AND r.file_date <= :d
                      AND NOT EXISTS (SELECT 1 FROM clearing_record x WHERE x.rrn = t.rrn
                                      AND x.bank = t.bank AND x.mti_class = '04')) AS bank_fen,
                   (SELECT min(r.file_date) FROM clearing_record r
                    WHERE r.rrn = t.rrn AND r.bank = t.bank AND r.mti_class = '02'
                      AND s.acc_date IS NOT NULL
                      AND r.file_date >= {d.day_before.format("s.acc_date")}
                      AND {d.days_between.format("r.file_date", "s.acc_date")} <= 1
                      AND r.file_date <= :d) AS date02
            FROM stip s JOIN {j}txn t ON t.rrn = s.rrn
        ) AS v
    ) AS w""",
        # 2. What the banks' files say of each: its own record (by RRN and MTI class) in
        #    the file of its date or of the date before (timing) and, for one held, the
        #    files since; and whether a reversal of it is listed.
        f"""INSERT INTO seen
    SELECT c.rrn,
           max(CASE WHEN r.mti_class = '02' THEN r.amount END),
           max(CASE WHEN r.mti_class = '02' THEN r.file_date END),
           {d.any_of}(r.mti_class = '04')
    FROM cand c {cross_join} clearing_record r ON r.rrn = c.rrn AND r.bank = c.bank
    WHERE r.file_date BETWEEN {d.day_before.format("c.txn_date")} AND :d
    GROUP BY c.rrn""",
        # 3. The verdicts, as settlement.md's table; what is paid, at the bank's amount
        #    (the same as the switch's, but for a mismatch), in the same pass (an UPDATE
        #    of every verdict after it cost a second pass, and on PostgreSQL a new version
        #    of each row).
        f"""INSERT INTO decided
    SELECT rrn, bank, kind, txn_date, merchant_id, terminal_id, masked_pan, original_rrn,
           switch_fen, bank_fen, category, action,
           CASE WHEN action = 'paid' THEN bank_fen END
    FROM (
        SELECT w.*, CASE category
            WHEN 'matched' THEN CASE WHEN switch_fen IS NULL THEN 'not_paid' ELSE 'paid' END
            WHEN 'switch_only' THEN CASE WHEN {d.days_between.format(":d", "txn_date")} >= :hold
                                         THEN 'reversal_queued' ELSE 'held' END
            WHEN 'bank_only' THEN 'reversal_queued'
            ELSE 'paid' END AS action
        FROM (
            SELECT v.*, CASE
                WHEN switch_fen IS NOT NULL AND bank_fen IS NOT NULL THEN CASE
                    WHEN bank_fen != switch_fen THEN 'amount_mismatch'
                    WHEN date02 != txn_date THEN 'timing'
                    ELSE 'matched' END
                WHEN switch_fen IS NOT NULL THEN 'switch_only'
                WHEN bank_fen IS NOT NULL THEN 'bank_only'
                ELSE 'matched' END AS category
            FROM (
                SELECT c.*, s.date02,
                       CASE WHEN c.stands THEN c.amount END AS switch_fen,
                       CASE WHEN s.amount02 IS NOT NULL AND NOT s.has04 THEN s.amount02 END
                           AS bank_fen
                FROM cand c LEFT JOIN seen s ON s.rrn = c.rrn
            ) AS v
        ) AS w
    ) AS x""",
        # 4. Records the switch never sent (standing: no reversal of them listed), in the
        #    files of the dates this settlement looks at.
        f"""INSERT INTO decided
    SELECT r.rrn, r.bank, {_UNKNOWN}, r.file_date, r.merchant_id, r.terminal_id, r.masked_pan,
           NULL, NULL, r.amount, 'bank_only', 'reversal_queued', NULL
    FROM clearing_record r
    WHERE r.file_date BETWEEN :d_hold AND :d AND r.mti_class = '02'
      AND NOT EXISTS (SELECT 1 FROM {j}txn t WHERE t.rrn = r.rrn)
      AND NOT EXISTS (SELECT 1 FROM settlement_item s WHERE s.rrn = r.rrn)
      AND NOT EXISTS (SELECT 1 FROM clearing_record x
                      WHERE x.rrn = r.rrn AND x.bank = r.bank AND x.mti_class = '04')
    ON CONFLICT (rrn) DO NOTHING""",
        # 4t. The company's own sales that credited a wallet at approval (wallet.md's
        #     top-ups): where a verdict changes their money (amount_mismatch; switch_only
        #     reversed after its dates), the wallet is corrected by the difference
        #     (recon, adjust). A repayment by card credited a credit line, whose book is
        #     credit.md's: not corrected here.
        f"""INSERT INTO ledger_order (business_date, request_id, leg, debit_account,
        credit_account, amount, kind, rrn, merchant_id)
    SELECT :d, 'recon', rrn, CASE WHEN diff > 0 THEN clearing ELSE customer END,
           CASE WHEN diff > 0 THEN customer ELSE clearing END,
           CASE WHEN diff < 0 THEN -diff ELSE diff END, 'adjust', rrn, merchant_id
    FROM (
        SELECT x.rrn, x.merchant_id, 'bank_clearing:' || x.bank AS clearing,
               CASE WHEN x.category = 'amount_mismatch' THEN x.bank_fen - x.switch_fen
                    ELSE -x.switch_fen END AS diff,
               (SELECT min(p.credit_account) FROM {ledger}ledger_transfer p
                WHERE p.rrn = x.rrn AND p.rrn != '' AND p.state = 'posted'
                  AND p.kind != 'adjust' AND p.debit_account = 'bank_clearing:' || x.bank
                  AND substr(p.credit_account, 1, 7) = 'wallet:')
                   AS customer
        FROM decided x JOIN own_merchant o ON o.merchant_id = x.merchant_id
        WHERE {_kind("x.kind", counts="debit")} AND x.switch_fen IS NOT NULL
          AND (x.category = 'amount_mismatch'
               OR (x.category = 'switch_only' AND x.action = 'reversal_queued'))
    ) AS c
    WHERE customer IS NOT NULL AND diff != 0
    ON CONFLICT (business_date, request_id, leg) DO NOTHING""",
        # 5. The reconciliation: every verdict other than matched.
        """INSERT INTO recon_line
    SELECT :d, category, bank, rrn, terminal_id, merchant_id, masked_pan, switch_fen, bank_fen,
           action
    FROM decided WHERE category != 'matched'""",
        # A terminal's batch upload, against the journal: approvals the terminal lists
        # that the journal does not have standing, and standing ones it left out, paid
        # as the bank's file decides: this settlement's verdict, or an earlier one's (the
        # date's batches first, then their transactions: not the whole journal).
        f"""INSERT INTO recon_line
    SELECT :d, 'terminal_only', coalesce(t.bank, ''), coalesce(t.rrn, ''), u.terminal_id,
           u.merchant_id, coalesce(t.pan_masked, ''), NULL, NULL, 'not_paid'
    FROM {j}batch_settlement b
    JOIN {j}batch_upload u ON u.terminal_id = b.terminal_id AND u.merchant_id = b.merchant_id
                          AND u.batch = b.batch
    LEFT JOIN {j}txn t ON t.terminal_id = u.terminal_id AND t.merchant_id = u.merchant_id
                      AND t.batch = u.batch AND t.stan = u.stan
                      AND t.kind = {products.upload_case_sql("u.kind")}
    WHERE b.business_date = :d AND b.upload_count IS NOT NULL
      AND (t.rrn IS NULL OR t.state != 'approved' OR t.reversed = {d.true}
           OR ({_kind("t.kind", counts="debit")} AND t.voided = {d.true}))""",
        f"""INSERT INTO recon_line
    SELECT :d, 'terminal_missing', t.bank, t.rrn, t.terminal_id, t.merchant_id, t.pan_masked,
           t.amount, NULL, coalesce(v.action, s.action, 'paid')
    FROM {j}batch_settlement b
    {cross_join} {j}txn t ON t.terminal_id = b.terminal_id AND t.merchant_id = b.merchant_id
                       AND t.batch = b.batch
    LEFT JOIN decided v ON v.rrn = t.rrn
    LEFT JOIN settlement_item s ON s.rrn = t.rrn
    WHERE b.business_date = :d AND b.upload_count IS NOT NULL
      AND t.state = 'approved' AND t.reversed = {d.false}
      AND (({_kind("t.kind", counts="debit")} AND t.voided = {d.false})
           OR {_kind("t.kind", counts="credit")})
      AND NOT EXISTS (SELECT 1 FROM {j}batch_upload u
                      WHERE u.terminal_id = t.terminal_id AND u.merchant_id = t.merchant_id
                        AND u.batch = t.batch AND u.stan = t.stan
                        AND u.kind = {products.upload_code_sql("t.kind")})""",
        # 6. Each verdict kept: held ones are looked for again by the next settlements.
        #    (WHERE true: SQLite reads an ON after a FROM as a join's, but for a WHERE.)
        """INSERT INTO settlement_item
    SELECT rrn, bank, kind, txn_date, merchant_id, terminal_id, masked_pan, original_rrn,
           switch_fen, bank_fen, paid_fen, category, action,
           CASE WHEN action = 'held' THEN 'held' WHEN category = 'stip_pending' THEN 'stip'
                ELSE 'final' END, :d
    FROM decided WHERE true
    ON CONFLICT (rrn) DO UPDATE SET bank = EXCLUDED.bank, kind = EXCLUDED.kind,
        txn_date = EXCLUDED.txn_date, merchant_id = EXCLUDED.merchant_id,
        terminal_id = EXCLUDED.terminal_id, masked_pan = EXCLUDED.masked_pan,
        original_rrn = EXCLUDED.original_rrn, switch_fen = EXCLUDED.switch_fen,
        bank_fen = EXCLUDED.bank_fen, paid_fen = EXCLUDED.paid_fen,
        category = EXCLUDED.category, action = EXCLUDED.action, state = EXCLUDED.state,
        settled_on = EXCLUDED.settled_on""",
        # 7. What is paid counts as a sale or a refund; a sale voided in the same
        #    settlement and its void cancel out (no fee); a later void returns money like
        #    a refund.
        f"""INSERT INTO counted
    SELECT d.rrn, d.bank, d.merchant_id, role, d.paid_fen,
           CASE WHEN role = 'sale' THEN {{fee}} ELSE 0 END
    FROM (
        SELECT p.*, CASE
            WHEN {_kind("p.kind", counts="debit")} AND EXISTS (SELECT 1 FROM decided v
                WHERE v.action = 'paid' AND {_kind("v.kind", counts="cancels")}
                AND v.original_rrn = p.rrn) THEN 'cancelled'
            WHEN {_kind("p.kind", counts="cancels")} AND EXISTS (SELECT 1 FROM decided s
                WHERE s.action = 'paid' AND {_kind("s.kind", counts="debit")}
                AND s.rrn = p.original_rrn) THEN 'cancelled'
            WHEN {_kind("p.kind", counts="debit")} THEN 'sale'
            ELSE 'refund' END AS role
        FROM decided p WHERE p.action = 'paid' AND p.paid_fen IS NOT NULL
          AND NOT EXISTS (SELECT 1 FROM own_merchant o WHERE o.merchant_id = p.merchant_id)
    ) AS d
    JOIN terms t ON t.merchant_id = CASE
        WHEN EXISTS (SELECT 1 FROM terms m WHERE m.merchant_id = d.merchant_id)
        THEN d.merchant_id ELSE '*' END""".replace(
            "{fee}", _FEE.format(least=d.least, greatest=d.greatest)
        ),
        # 8. Per merchant: its paid sales and refunds, fees, held sales and what earlier
        #    dates left owing.
        f"""INSERT INTO merchant_day
    SELECT m.merchant_id,
           coalesce((SELECT nullif(account, '') FROM terms WHERE merchant_id = m.merchant_id),
                    (SELECT nullif(account, '') FROM terms WHERE merchant_id = '*'),
                    m.merchant_id),
           coalesce(c.sales_count, 0), coalesce(c.sales_fen, 0), coalesce(c.refunds_count, 0),
           coalesce(c.refunds_fen, 0), coalesce(c.fees_fen, 0), coalesce(h.held_fen, 0),
           coalesce((SELECT p.carried_out_fen FROM payout p
                     WHERE p.merchant_id = m.merchant_id AND p.business_date < :d
                     ORDER BY p.business_date DESC LIMIT 1), 0)
    FROM (
        SELECT merchant_id FROM counted
        UNION SELECT merchant_id FROM settlement_item
              WHERE state = 'held' AND {_kind("kind", counts="debit")}
                AND merchant_id NOT IN (SELECT merchant_id FROM own_merchant)
        UNION SELECT p.merchant_id FROM payout p
              WHERE p.carried_out_fen != 0 AND p.business_date = (
                  SELECT max(q.business_date) FROM payout q
                  WHERE q.merchant_id = p.merchant_id AND q.business_date < :d)
    ) AS m
    LEFT JOIN (
        SELECT merchant_id,
               {d.count_if.format("role = 'sale'")} AS sales_count,
               sum(CASE WHEN role = 'sale' THEN paid_fen ELSE 0 END) AS sales_fen,
               {d.count_if.format("role = 'refund'")} AS refunds_count,
               sum(CASE WHEN role = 'refund' THEN paid_fen ELSE 0 END) AS refunds_fen,
               sum(fee) AS fees_fen
        FROM counted GROUP BY merchant_id
    ) AS c ON c.merchant_id = m.merchant_id
    LEFT JOIN (
        SELECT merchant_id, sum(switch_fen) AS held_fen FROM settlement_item
        WHERE state = 'held' AND {_kind("kind", counts="debit")} GROUP BY merchant_id
    ) AS h ON h.merchant_id = m.merchant_id""",
        """INSERT INTO payout
    SELECT :d, merchant_id, account, sales_count, sales_fen, refunds_count, refunds_fen,
           fees_fen, held_fen, carried_in_fen, net,
           CASE WHEN net > 0 THEN net ELSE 0 END, CASE WHEN net > 0 THEN 0 ELSE net END
    FROM (SELECT *, sales_fen - refunds_fen - fees_fen + carried_in_fen AS net
          FROM merchant_day) AS md""",
        # 8o. Each merchant's on-us part (wallet.md: on-us payments count as card sales,
        #     same fees, never held), and what leaves the on-us ledger for it: its fees
        #     to merchant_fee_income, its net to payouts (back from payouts if negative:
        #     the card side's postings carry the rest of the payout row).
        f"""INSERT INTO onus_payout
    SELECT :d, merchant_id,
           {d.whole.format("sum(CASE WHEN role = 'sale' THEN paid_fen ELSE 0 END)")},
           {d.whole.format("sum(CASE WHEN role = 'refund' THEN paid_fen ELSE 0 END)")},
           {d.whole.format("sum(fee)")}
    FROM counted WHERE bank = '{products.LEDGER_BANK}' GROUP BY merchant_id""",
        """INSERT INTO ledger_order (business_date, request_id, leg, debit_account,
        credit_account, amount, kind, rrn, merchant_id)
    SELECT :d, 'fee', merchant_id, 'merchant:' || merchant_id, 'merchant_fee_income',
           fees_fen, 'fee', '', merchant_id
    FROM onus_payout WHERE business_date = :d AND fees_fen > 0
    UNION ALL
    SELECT :d, 'payout', merchant_id,
           CASE WHEN net > 0 THEN 'merchant:' || merchant_id ELSE 'payouts' END,
           CASE WHEN net > 0 THEN 'payouts' ELSE 'merchant:' || merchant_id END,
           CASE WHEN net > 0 THEN net ELSE -net END, 'payout', '', merchant_id
    FROM (SELECT merchant_id, sales_fen - refunds_fen - fees_fen AS net FROM onus_payout
          WHERE business_date = :d) AS o
    WHERE net != 0""",
        # 9. The ledger: each amount paid as a posting of a debit and a credit line.
        #    Banks owe the sales they approved (bank_clearing:), merchants are owed them
        #    (merchant:); refunds the other way; fees move from the merchant to
        #    merchant_fee_income (settlement.md's accounts); a
        #    carried negative balance moves between merchant: and carried:; payouts leave
        #    to payouts: (the money sent).
        _postings(
            d,
            "counted",
            "bank, merchant_id",
            ("sales", "sales_fen", "'bank_clearing:' || bank", "'merchant:' || merchant_id"),
            ("refunds", "refunds_fen", "'merchant:' || merchant_id", "'bank_clearing:' || bank"),
        ),
        _postings(
            d,
            "payout",
            "merchant_id",
            ("fees", "fees_fen", "'merchant:' || merchant_id", "'merchant_fee_income'"),
            (
                "carry_in",
                "-carried_in_fen",
                "'merchant:' || merchant_id",
                "'carried:' || merchant_id",
            ),
            ("payout", "payout_fen", "'merchant:' || merchant_id", "'payouts'"),
            ("payout_onus", "-payout_fen", "'payouts'", "'merchant:' || merchant_id"),
            (
                "carry_out",
                "-carried_out_fen",
                "'carried:' || merchant_id",
                "'merchant:' || merchant_id",
            ),
        ),
        # 9s. Stood-in sales (risk.md): one paid before its bank's file matched it is
        #     funded from stip_receivable:<bank>; a later match moves it to the bank's
        #     account, a loss to stip_loss.
        _stip_postings(d),
        # 10. The reversals decided: of the switch's own transactions, and of records the
        #     switch never sent (with what the bank's file says of them; the verdicts
        #     first, not every date's records).
        f"""INSERT INTO reversal_order (rrn, bank, business_date, reason, known)
    SELECT rrn, bank, :d,
           CASE category WHEN 'bank_only' THEN 'settlement: bank_only'
                ELSE 'settlement: switch_only after ' || {d.as_text.format(":hold")} || ' dates'
           END, {d.true}
    FROM decided WHERE action = 'reversal_queued' AND kind != {_UNKNOWN}
    ON CONFLICT (rrn) DO NOTHING""",
        f"""INSERT INTO reversal_order (rrn, bank, business_date, reason, known, mti,
        processing_code, stan, transmission, amount, currency, terminal_id, merchant_id,
        masked_pan)
    SELECT r.rrn, r.bank, :d, 'settlement: bank_only, never sent by the switch', {d.false},
           r.mti, r.processing_code, r.stan, r.transmission, r.amount, r.currency,
           r.terminal_id, r.merchant_id, r.masked_pan
    FROM decided d {cross_join} clearing_record r ON r.rrn = d.rrn AND r.bank = d.bank
                                               AND r.file_date = d.txn_date
                                               AND r.mti_class = '02'
    WHERE d.kind = {_UNKNOWN}
    ON CONFLICT (rrn) DO NOTHING""",
    )
