"""The front doors' wire formats, each one codec to and from Mesh's internal shape.

Mesh's internal shape is the Chat Completions request, answer and stream chunk that every provider adapter takes
and gives (gateway/providers/). A front door other than Chat Completions has one module here: it decodes its
request into that shape and encodes the answer and the stream back into its own, so three front doors and four
provider kinds need three codecs, not twelve translators.
"""
