"""The tag-safety stack: per-format genre fields, the plan, the safe write, the journal. Never imports torch.

The library API of `genretag tag` and `genretag undo`:

    from genretag.tags import Tagger, undo
    tagger = Tagger(policy="overwrite", write=True)      # journal: the user data dir's
    for plan in tagger.run(results):                     # TrackResults from classification
        ...
    for item in undo(): ...                              # newest write first
"""

from genretag.tags.errors import ChangedSinceClassified, DamagedTagError, TagError
from genretag.tags.fields import GenreTags, read_genres, read_tags
from genretag.tags.journal import JournalWriter, UndoItem, undo
from genretag.tags.plan import TagPlan, plan_tag
from genretag.tags.safe_write import WriteOutcome, write_genres_safely
from genretag.tags.tagger import Tagger

__all__ = ["ChangedSinceClassified", "DamagedTagError", "GenreTags", "JournalWriter", "TagError", "TagPlan", "Tagger",
           "UndoItem", "WriteOutcome", "plan_tag", "read_genres", "read_tags", "undo", "write_genres_safely"]
