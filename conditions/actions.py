"""Operations on the conditions database: look up the payloads valid at a (run, lumiblock),
create and attach payload lists and IOVs, lock, clone and delete global tags.

Writes need the admin or conditions-manager role (``check_may_write``). In an unlocked
global tag a new IOV wins over what it overlaps (older IOVs are cut, split or removed); a
locked global tag refuses any write that would change an answer it gave: it takes only
IOVs that overlap nothing it holds (new runs), as nopayloaddb does.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass

from django.db import connection, transaction
from django.db.models import Count, Q
from django.utils import timezone

from dss import roles
from dss.errors import Conflict, Forbidden, InvalidInput, NotFound
from dss.roles import ADMIN, roles_of

from .models import NAME_RE, NAME_RULE, GlobalTag, PayloadIOV, PayloadList, PayloadType

CONDITIONS_MANAGER = roles.CONDITIONS_MANAGER
# How nopayloaddb and its client write an open end.
OPEN_END = sys.maxsize
IOV_LIMIT = sys.maxsize
# IOVs in one bulk insert (one transaction)
BULK_LIMIT = 50_000

Point = tuple[int, int]


def may_write(user) -> bool:
    """Whether ``user`` may change the conditions database: admins and conditions managers."""
    if user is None or not user.is_authenticated:
        return False
    return bool(roles_of(user) & {ADMIN, CONDITIONS_MANAGER})


def check_may_write(user) -> None:
    if not may_write(user):
        raise Forbidden("changing conditions needs the admin or conditions-manager role")


def check_name(value, what: str) -> str:
    if not isinstance(value, str) or not NAME_RE.match(value):
        raise InvalidInput(f"a {what} name is {NAME_RULE}; got {value!r}", where=what)
    return value


def check_iov_number(value, where: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= IOV_LIMIT:
        raise InvalidInput(f"{where} must be an integer from 0 to {IOV_LIMIT}", where=where)
    return value


# --------------------------------------------------------------------------- reading


def get_global_tag(name: str) -> GlobalTag:
    try:
        return GlobalTag.objects.get(name=name)
    except GlobalTag.DoesNotExist:
        raise NotFound(f"no global tag named {name!r}", where="global tag") from None


def get_payload_type(name: str) -> PayloadType:
    try:
        return PayloadType.objects.get(name=name)
    except PayloadType.DoesNotExist:
        raise NotFound(f"no payload type named {name!r}", where="payload type") from None


def get_payload_list(name: str) -> PayloadList:
    try:
        return PayloadList.objects.select_related("global_tag", "payload_type").get(name=name)
    except PayloadList.DoesNotExist:
        raise NotFound(f"no payload list named {name!r}", where="payload list") from None


def global_tags_with_counts():
    """Every global tag with its number of payload lists and IOVs (one query)."""
    return GlobalTag.objects.annotate(
        payload_lists_count=Count("payload_lists", distinct=True),
        payload_iov_count=Count("payload_lists__iovs", distinct=True),
    ).order_by("name")


def payload_lists_of(gt_name: str) -> dict[str, str]:
    """{payload type: payload list name} of a global tag (one query; {} for no such tag)."""
    rows = PayloadList.objects.filter(global_tag__name=gt_name).values_list(
        "payload_type__name", "name"
    )
    return dict(rows)


@dataclass(frozen=True)
class Lookup:
    """What a global tag holds at one point: its status, and one row per payload type that
    has an IOV there: (type, url, checksum, size, major, minor, major_end, minor_end)."""

    status: str
    rows: list[tuple]

    @property
    def locked(self) -> bool:
        return self.status == GlobalTag.LOCKED


def _lookup_sql() -> str:
    gt, pl = GlobalTag._meta.db_table, PayloadList._meta.db_table
    pt, iov = PayloadType._meta.db_table, PayloadIOV._meta.db_table
    # Table names come from the models, values are parameters. The inner query is one
    # probe of the (payload_list, major_iov, minor_iov) index per list; the end test runs
    # on the one row it returns. The LEFT JOINs keep one row for a tag with no list, so the
    # status comes back with the answer.
    return f"""
        SELECT gt.status, pt.name, iov.payload_url, iov.checksum, iov.size,
               iov.major_iov, iov.minor_iov, iov.major_iov_end, iov.minor_iov_end
        FROM {gt} gt
        LEFT JOIN {pl} pl ON pl.global_tag_id = gt.id
        LEFT JOIN {pt} pt ON pt.id = pl.payload_type_id
        LEFT JOIN {iov} iov ON iov.id = (
            SELECT i.id FROM {iov} i
            WHERE i.payload_list_id = pl.id AND (i.major_iov, i.minor_iov) <= (%s, %s)
            ORDER BY i.major_iov DESC, i.minor_iov DESC
            LIMIT 1
        ) AND (iov.major_iov_end IS NULL OR (iov.major_iov_end, iov.minor_iov_end) > (%s, %s))
        WHERE gt.name = %s
        ORDER BY pt.name
    """


def lookup(gt_name: str, major: int, minor: int) -> Lookup:
    """The payloads that global tag ``gt_name`` holds at (major, minor), in one query."""
    check_iov_number(major, "majorIOV")
    check_iov_number(minor, "minorIOV")
    with connection.cursor() as cursor:
        cursor.execute(_lookup_sql(), [major, minor, major, minor, gt_name])
        found = cursor.fetchall()
    if not found:
        raise NotFound(f"no global tag named {gt_name!r}", where="gtName")
    rows = [
        (t, url, ck, size, a, b, OPEN_END if c is None else c, OPEN_END if d is None else d)
        for _, t, url, ck, size, a, b, c, d in found
        if url is not None
    ]
    return Lookup(found[0][0], rows)


# --------------------------------------------------------------------------- writing


def do_create_payload_type(user, name, description: str = "") -> PayloadType:
    """A new payload type; Conflict if the name is taken."""
    check_may_write(user)
    check_name(name, "payload type")
    with transaction.atomic():
        if PayloadType.objects.filter(name=name).exists():
            raise Conflict(f"payload type {name!r} exists", where="name")
        return PayloadType.objects.create(name=name, description=(description or "")[:255])


def do_create_global_tag(user, name, author: str = "", description: str = "") -> GlobalTag:
    """A new, unlocked global tag; Conflict if the name is taken."""
    check_may_write(user)
    check_name(name, "global tag")
    with transaction.atomic():
        if GlobalTag.objects.filter(name=name).exists():
            raise Conflict(f"global tag {name!r} exists", where="name")
        return GlobalTag.objects.create(
            name=name,
            author=(author or getattr(user, "username", ""))[:80],
            description=(description or "")[:255],
        )


def _touch(gt: GlobalTag) -> None:
    GlobalTag.objects.filter(pk=gt.pk).update(updated=timezone.now())


def do_set_status(user, gt: GlobalTag, status: str) -> GlobalTag:
    """Lock or unlock a global tag."""
    check_may_write(user)
    if status not in (GlobalTag.UNLOCKED, GlobalTag.LOCKED):
        raise InvalidInput(
            f"a global tag status is 'unlocked' or 'locked', not {status!r}", where="status"
        )
    gt.status, gt.updated = status, timezone.now()
    gt.save(update_fields=["status", "updated"])
    return gt


def do_clone_global_tag(user, source: GlobalTag, target: str) -> GlobalTag:
    """A new unlocked global tag ``target`` with copies of all of ``source``'s payload
    lists and IOVs: it answers every lookup as ``source`` does."""
    check_may_write(user)
    check_name(target, "global tag")
    with transaction.atomic():
        if GlobalTag.objects.filter(name=target).exists():
            raise Conflict(f"global tag {target!r} exists", where="cloneName")
        clone = GlobalTag.objects.create(
            name=target,
            author=getattr(user, "username", "")[:80],
            description=f"clone of {source.name}"[:255],
        )
        for old in source.payload_lists.select_related("payload_type"):
            new = _new_payload_list(old.payload_type, clone)
            PayloadIOV.objects.bulk_create(
                [
                    PayloadIOV(
                        payload_list=new,
                        payload_url=i.payload_url,
                        checksum=i.checksum,
                        size=i.size,
                        major_iov=i.major_iov,
                        minor_iov=i.minor_iov,
                        major_iov_end=i.major_iov_end,
                        minor_iov_end=i.minor_iov_end,
                        inserted=i.inserted,
                    )
                    for i in old.iovs.all().iterator()
                ],
                batch_size=2000,
            )
    return clone


def check_unlocked(gt: GlobalTag | None, doing: str) -> None:
    if gt is not None and gt.is_locked:
        raise Conflict(
            f"global tag {gt.name!r} is locked: {doing} would change it; unlock it or clone it",
            where="global tag",
            code="locked",
        )


def do_delete_global_tag(user, gt: GlobalTag) -> None:
    """Delete an unlocked global tag with its payload lists and IOVs."""
    check_may_write(user)
    check_unlocked(gt, "deleting it")
    gt.delete()


def _new_payload_list(pt: PayloadType, gt: GlobalTag | None) -> PayloadList:
    pl = PayloadList.objects.create(
        name=f"{pt.name}_new_{timezone.now().timestamp()}", payload_type=pt, global_tag=gt
    )
    pl.name = f"{pt.name}_{pl.pk}"
    pl.save(update_fields=["name"])
    return pl


def do_create_payload_list(user, type_name) -> PayloadList:
    """A new payload list of a type, attached to no global tag yet."""
    check_may_write(user)
    pt = get_payload_type(check_name(type_name, "payload type"))
    with transaction.atomic():
        return _new_payload_list(pt, None)


def do_attach_payload_list(user, pl: PayloadList, gt: GlobalTag) -> PayloadList:
    """Attach ``pl`` to ``gt`` in place of the tag's list of the same type (which is
    detached, not deleted). A locked tag refuses."""
    check_may_write(user)
    check_unlocked(gt, "attaching a payload list")
    with transaction.atomic():
        PayloadList.objects.filter(global_tag=gt, payload_type=pl.payload_type_id).exclude(
            pk=pl.pk
        ).update(global_tag=None)
        pl.global_tag = gt
        pl.save(update_fields=["global_tag"])
        _touch(gt)
    return pl


def do_delete_payload_list(user, pl: PayloadList) -> None:
    """Delete an empty payload list that no locked global tag holds."""
    check_may_write(user)
    check_unlocked(pl.global_tag, "deleting its payload list")
    if pl.iovs.exists():
        raise Conflict(f"payload list {pl.name} holds {pl.iovs.count()} IOVs", where="payload list")
    pl.delete()


def do_delete_payload_type(user, pt: PayloadType) -> None:
    """Delete a payload type that no payload list uses."""
    check_may_write(user)
    n = pt.lists.count()
    if n:
        raise Conflict(f"payload type {pt.name} is used by {n} payload lists", where="payload type")
    pt.delete()


def check_iov(major, minor, major_end=None, minor_end=None) -> tuple[Point, Point | None]:
    """The start and end (None: open) of an IOV from its four numbers; an end of
    sys.maxsize in both is open, as nopayloaddb's clients send it."""
    start = (check_iov_number(major, "major_iov"), check_iov_number(minor, "minor_iov"))
    if major_end is None and minor_end is None:
        return start, None
    if major_end is None or minor_end is None:
        raise InvalidInput("give both major_iov_end and minor_iov_end, or neither", where="iov")
    end = (
        check_iov_number(major_end, "major_iov_end"),
        check_iov_number(minor_end, "minor_iov_end"),
    )
    if end == (OPEN_END, OPEN_END):
        return start, None
    if end <= start:
        raise InvalidInput(
            f"an IOV ends after it starts: ({major}, {minor}) to ({major_end}, {minor_end})",
            where="iov",
        )
    return start, end


def do_create_iov(
    user, payload_url, checksum, major, minor, major_end=None, minor_end=None, size=None
) -> PayloadIOV:
    """A new IOV, in no payload list yet (``do_attach_iov`` puts it in one)."""
    check_may_write(user)
    start, end = check_iov(major, minor, major_end, minor_end)
    if not isinstance(payload_url, str) or not payload_url or len(payload_url) > 500:
        raise InvalidInput("payload_url: 1 to 500 characters", where="payload_url")
    if not isinstance(checksum, str) or len(checksum) > 255:
        raise InvalidInput("checksum: a string of up to 255 characters", where="checksum")
    if size is not None and (isinstance(size, bool) or not isinstance(size, int) or size < 0):
        raise InvalidInput("size: a number of bytes", where="size")
    return PayloadIOV.objects.create(
        payload_url=payload_url,
        checksum=checksum,
        size=size,
        major_iov=start[0],
        minor_iov=start[1],
        major_iov_end=end[0] if end else None,
        minor_iov_end=end[1] if end else None,
    )


def _before(point: Point) -> Q:
    """IOVs that start before ``point``."""
    return Q(major_iov__lt=point[0]) | Q(major_iov=point[0], minor_iov__lt=point[1])


def _ending_after(point: Point) -> Q:
    """IOVs that end after ``point`` (or never)."""
    return (
        Q(major_iov_end__isnull=True)
        | Q(major_iov_end__gt=point[0])
        | Q(major_iov_end=point[0], minor_iov_end__gt=point[1])
    )


def overlapping(pl: PayloadList, start: Point, end: Point | None):
    """The IOVs of ``pl`` that share a point with [start, end)."""
    q = pl.iovs.filter(_ending_after(start))
    if end is not None:
        q = q.filter(_before(end))
    return q


def do_attach_iov(user, pl: PayloadList, iov: PayloadIOV) -> PayloadIOV:
    """Put ``iov`` into ``pl``. In an unlocked global tag it wins over the IOVs it overlaps:
    they are cut at its start, resumed at its end, or removed. A locked tag takes it only
    if it overlaps nothing (Conflict otherwise)."""
    check_may_write(user)
    if iov.payload_list_id is not None and iov.payload_list_id != pl.pk:
        raise Conflict(f"IOV {iov.pk} is in payload list {iov.payload_list}", where="piov_id")
    start, end = iov.start, iov.end
    with transaction.atomic():
        # one writer per list at a time: the overlap test and the change are one step
        pl = (
            PayloadList.objects.select_for_update(of=("self",))
            .select_related("global_tag")
            .get(pk=pl.pk)
        )
        gt = pl.global_tag
        others = overlapping(pl, start, end).exclude(pk=iov.pk)
        if gt is not None and gt.is_locked:
            clash = others.first()
            if clash is not None:
                raise Conflict(
                    f"global tag {gt.name!r} is locked: the IOV [{start}, {end or 'open'}) "
                    f"overlaps {clash.payload_url} [{clash.start}, {clash.end or 'open'})",
                    where="iov",
                    code="locked",
                )
        else:
            _make_room(list(others), start, end)
        iov.payload_list = pl
        iov.save(update_fields=["payload_list"])
        if gt is not None:
            _touch(gt)
    return iov


def _make_room(others: list[PayloadIOV], start: Point, end: Point | None) -> None:
    for old in others:
        old_end = old.end
        starts_before = old.start < start
        ends_after = end is not None and (old_end is None or old_end > end)
        if starts_before and ends_after:  # the new IOV splits it: keep both sides
            PayloadIOV.objects.create(
                payload_list=old.payload_list,
                payload_url=old.payload_url,
                checksum=old.checksum,
                size=old.size,
                major_iov=end[0],
                minor_iov=end[1],
                major_iov_end=old.major_iov_end,
                minor_iov_end=old.minor_iov_end,
                inserted=old.inserted,
            )
        if starts_before:
            old.major_iov_end, old.minor_iov_end = start
            old.save(update_fields=["major_iov_end", "minor_iov_end"])
        elif ends_after:
            old.major_iov, old.minor_iov = end
            old.save(update_fields=["major_iov", "minor_iov"])
        else:
            old.delete()


def do_insert_iov(
    user,
    gt: GlobalTag,
    type_name: str,
    payload_url: str,
    checksum: str,
    start: Point,
    end: Point | None = None,
    size: int | None = None,
) -> PayloadIOV:
    """Insert one IOV into ``gt``'s list of ``type_name``, making the list if the tag has
    none (an unlocked tag only)."""
    check_may_write(user)
    pt = get_payload_type(type_name)
    with transaction.atomic():
        pl = PayloadList.objects.filter(global_tag=gt, payload_type=pt).first()
        if pl is None:
            check_unlocked(gt, f"adding a {pt.name} payload list")
            pl = _new_payload_list(pt, gt)
        iov = do_create_iov(user, payload_url, checksum, *start, *(end or (None, None)), size=size)
        return do_attach_iov(user, pl, iov)


def do_delete_iov(user, gt: GlobalTag, type_name: str, start: Point, end: Point | None) -> None:
    """Delete the IOV of ``gt``'s ``type_name`` list that starts at ``start`` and ends at
    ``end`` (None: open); an unlocked tag only."""
    check_may_write(user)
    check_unlocked(gt, "deleting an IOV")
    q = PayloadIOV.objects.filter(
        payload_list__global_tag=gt,
        payload_list__payload_type__name=type_name,
        major_iov=start[0],
        minor_iov=start[1],
    )
    q = (
        q.filter(major_iov_end__isnull=True)
        if end is None
        else q.filter(major_iov_end=end[0], minor_iov_end=end[1])
    )
    if not q.delete()[0]:
        raise NotFound(
            f"global tag {gt.name!r} has no {type_name} IOV [{start}, {end or 'open'})",
            where="iov",
        )
    _touch(gt)


def do_bulk_insert(user, items: list[dict]) -> int:
    """Insert many IOVs, each {payload_list, payload_url, checksum, major_iov, minor_iov,
    [major_iov_end, minor_iov_end, size]}, with the rules of ``do_attach_iov``, in one
    transaction: all or none."""
    check_may_write(user)
    if not isinstance(items, list) or not items:
        raise InvalidInput("send a JSON list of IOVs", where="body")
    if len(items) > BULK_LIMIT:
        raise InvalidInput(f"send at most {BULK_LIMIT} IOVs at a time", where="body")
    lists: dict[str, PayloadList] = {}
    with transaction.atomic():
        for n, item in enumerate(items):
            if not isinstance(item, dict):
                raise InvalidInput(f"item {n} is not an object", where=f"item {n}")
            name = item.get("payload_list")
            if name not in lists:
                lists[name] = get_payload_list(check_name(name, "payload list"))
            iov = do_create_iov(
                user,
                item.get("payload_url"),
                item.get("checksum", ""),
                item.get("major_iov"),
                item.get("minor_iov"),
                item.get("major_iov_end"),
                item.get("minor_iov_end"),
                size=item.get("size"),
            )
            do_attach_iov(user, lists[name], iov)
    return len(items)


# --------------------------------------------------------------------------- pages


@dataclass(frozen=True)
class TypeDifference:
    """How two global tags differ in one payload type: IOVs (start, end, url) only in A,
    only in B."""

    payload_type: str
    only_a: list[tuple]
    only_b: list[tuple]


def compare_global_tags(a: GlobalTag, b: GlobalTag) -> list[TypeDifference]:
    """Per payload type, the IOVs that one tag has and the other has not (same start, end,
    URL and checksum count as the same)."""

    def iovs_of(gt: GlobalTag) -> dict[str, set[tuple]]:
        out: dict[str, set[tuple]] = {}
        rows = PayloadIOV.objects.filter(payload_list__global_tag=gt).values_list(
            "payload_list__payload_type__name",
            "major_iov",
            "minor_iov",
            "major_iov_end",
            "minor_iov_end",
            "payload_url",
            "checksum",
        )
        for t, *rest in rows.iterator():
            out.setdefault(t, set()).add(tuple(rest))
        for t in payload_lists_of(gt.name):
            out.setdefault(t, set())
        return out

    ia, ib = iovs_of(a), iovs_of(b)
    diffs = []
    for t in sorted(set(ia) | set(ib)):
        sa, sb = ia.get(t, set()), ib.get(t, set())
        if sa != sb or (t in ia) != (t in ib):
            diffs.append(TypeDifference(t, sorted(sa - sb), sorted(sb - sa)))
    return diffs
