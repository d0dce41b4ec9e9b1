"""How a worker rebuilds the driver's teacher: a small picklable recipe instead of the model's weights.

A Ray actor loads its own copy of the teacher once, from the same model string, token limit and
normalisation; the rebuilt teacher's :attr:`id` must equal the driver's, or its vectors would be cached
under another teacher's name.
"""

from __future__ import annotations

from dataclasses import dataclass

from embedkd.errors import EmbedkdError


@dataclass(frozen=True)
class TeacherRecipe:
    """What a worker needs to load the same SentenceTransformer teacher.

    Attributes:
        model: model string (local folder, Hugging Face id or offline package id), resolved on the worker.
        max_seq_length: the driver teacher's token limit.
        normalize: whether the teacher L2-normalises its vectors.
        teacher_id: the driver teacher's id, checked against the rebuilt one.
    """

    model: str
    max_seq_length: int
    normalize: bool
    teacher_id: str

    def build(self, device: str | None = None):
        """Load the teacher on this worker (``device``: torch device; None lets torch choose).

        Raises:
            EmbedkdError: the rebuilt teacher is not the driver's (another model under the same name).
        """
        from embedkd.teachers import SentenceTransformerTeacher

        teacher = SentenceTransformerTeacher(
            self.model,
            max_seq_length=self.max_seq_length,
            normalize=self.normalize,
            device=device,
            name=self.model,
        )
        if teacher.id != self.teacher_id:
            raise EmbedkdError(
                f"the teacher rebuilt on a worker is {teacher.id!r}, not the driver's {self.teacher_id!r}; "
                "every node must see the same model files"
            )
        return teacher


def recipe_of(teacher) -> TeacherRecipe:
    """The recipe of a local SentenceTransformer teacher.

    Raises:
        EmbedkdError: the teacher is not a local SentenceTransformer (an HTTP endpoint or precomputed
            vectors gain nothing from Ray), or its model string does not resolve to a model.
    """
    from embedkd.hub import resolve_model
    from embedkd.teachers import SentenceTransformerTeacher

    if not isinstance(teacher, SentenceTransformerTeacher):
        raise EmbedkdError(
            f"the ray engine runs SentenceTransformer teachers; {teacher.id!r} is a "
            f"{type(teacher).__name__}: use the local engine for it"
        )
    try:
        resolve_model(teacher.name)
    except EmbedkdError as exc:
        raise EmbedkdError(
            f"the ray engine reloads the teacher by name on each worker, but {teacher.name!r} does not "
            f"resolve to a model ({exc}); build the teacher from a model folder or id"
        ) from exc
    return TeacherRecipe(
        model=teacher.name,
        max_seq_length=int(teacher.model.max_seq_length),
        normalize=bool(teacher.normalize),
        teacher_id=teacher.id,
    )
