"""Recording many generated genres at once: one lookup per chunk, same rows as one by one."""

from __future__ import annotations

from typing import Any

from sqlalchemy import event, func, select

from bot.store.generated import generated_names, record_generations, record_generations_bulk
from bot.store.models import ORIGIN_TRAINING, Generation, Genre


async def test_names_sharing_a_key_and_existing_genres_reuse_their_row(sessions: Any) -> None:
    async with sessions.begin() as session:
        session.add(Genre(name="post rock", display_name="post-rock", origin=ORIGIN_TRAINING))
    ids = await record_generations(
        sessions, ["Glacier Pop", "glacier pop", "post rock", "", "swamp techno"]
    )
    assert len(ids) == 4 == len(set(ids))
    async with sessions.begin() as session:
        rows = (await session.execute(select(Generation.id, Genre.name).join(Genre))).all()
    by_id = dict(rows)
    assert [by_id[i] for i in ids] == ["glacier pop", "glacier pop", "post rock", "swamp techno"]
    assert sorted(await generated_names(sessions)) == ["glacier pop", "swamp techno"]


async def test_thousands_of_names_cost_a_few_statements(sessions: Any) -> None:
    statements: list[str] = []

    def count(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        statements.append(statement)

    engine = sessions.kw["bind"].sync_engine
    event.listen(engine, "before_cursor_execute", count)
    names = [f"w{i} jazz" for i in range(3000)]
    try:
        recorded = await record_generations_bulk(sessions, names, model_name="m")
        # Issued again (and once more within the call): reuses the genre rows.
        recorded += await record_generations_bulk(sessions, names[:1500] + names[:1])
    finally:
        event.remove(engine, "before_cursor_execute", count)
    assert recorded == 4501
    # One by one, that was three statements per name (a lookup and two inserts).
    assert len(statements) < 100
    async with sessions.begin() as session:
        assert await session.scalar(select(func.count()).select_from(Genre)) == 3000
        assert await session.scalar(select(func.count()).select_from(Generation)) == 4501
    assert sorted(await generated_names(sessions)) == sorted(names)
