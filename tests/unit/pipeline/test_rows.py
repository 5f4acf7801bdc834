from livedash.pipeline import rows


def test_primary_keys_have_one_length_whatever_the_values() -> None:
    short = rows.primary_key(rows.key_parts("geo_10s", 0, ["DE"], 0, None))
    long = rows.primary_key(rows.key_parts("geo_10s", 0, ["😀" * 256, "é" * 256], 3, None))
    assert len(short) == len(long) == 32
    assert int(short, 16) >= 0  # hex digits


def test_keys_differ_where_their_parts_do_even_past_512_characters() -> None:
    base = "😀" * 255
    a = rows.primary_key(rows.key_parts("r", 0, [base + "a"], 0, None))
    b = rows.primary_key(rows.key_parts("r", 0, [base + "b"], 0, None))
    assert a != b


def test_a_correction_has_a_key_of_its_own_per_block() -> None:
    window = rows.key_parts("r", 0, ["DE"], 1, None)
    late = rows.key_parts("r", 0, ["DE"], 1, (60_000, 60_000))
    assert late == [*window, "late", 60_000, 60_000]
    assert rows.primary_key(window) != rows.primary_key(late)
    assert rows.primary_key(late) != rows.primary_key(rows.key_parts("r", 0, ["DE"], 1, (120_000, 60_000)))
    assert rows.primary_key(late) != rows.primary_key(rows.key_parts("r", 0, ["DE"], 1, (60_000, 30_000)))
    assert [rows.late_block(w, 60_000) for w in (0, 59_999, 60_000, 130_000)] == [0, 0, 60_000, 120_000]


def test_versions_grow_with_the_offset_and_final_beats_provisional() -> None:
    assert rows.version(10, False) < rows.version(10, True) < rows.version(11, False)
    assert rows.version(0, False) == 0


def test_columns_name_each_metric_four_times_and_the_dimensions_between_key_and_aggregates() -> None:
    cols = rows.columns(["country", "os"], ["latency_ms"])
    assert cols[: len(rows.KEY_COLUMNS)] == list(rows.KEY_COLUMNS)
    assert cols[len(rows.KEY_COLUMNS) : len(rows.KEY_COLUMNS) + 2] == ["country", "os"]
    assert [c for c in cols if c.startswith("latency_ms")] == list(rows.metric_columns("latency_ms"))
    assert len(cols) == len(set(cols))


def test_the_sentinels_are_reserved_and_distinct() -> None:
    assert {rows.ALL, rows.OTHER} == rows.RESERVED
    assert rows.MISSING not in rows.RESERVED
    assert len({rows.ALL, rows.OTHER, rows.MISSING}) == 3
